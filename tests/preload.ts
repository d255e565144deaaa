// Preloaded by bun test (bunfig.toml): JobManagers started by tests take a free REST port rather than 8081, so
// that test files, and test runs, can run side by side. A test that wants a fixed port passes -D rest.port=N.
process.env.TM_REST_PORT ??= "0";
