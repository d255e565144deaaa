// The command line as a user meets it: real child processes of `bun main.ts`.
import { afterAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as path from "node:path";
import { BUN, Child, countWords, expectSameCounts, parseCountLines, removeTempDirs, ROOT, tempDir } from "./helpers.ts";

afterAll(async () => {
  await Child.stopAll();
  removeTempDirs();
});

async function cli(args: string[], env: Record<string, string> = {}) {
  const child = new Child([BUN, "main.ts", ...args], env);
  const code = await child.exited(60_000);
  return { code, stdout: child.stdout, stderr: child.stderr };
}

describe("cli", () => {
  test("--version and --help for every command", async () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, "package.json"), "utf8"));
    expect((await cli(["--version"])).stdout.trim()).toBe(`tm ${pkg.version}`);
    const main = await cli(["--help"]);
    expect(main.code).toBe(0);
    for (const cmd of ["jobmanager", "local", "submit"]) expect(main.stdout).toContain(`taskmanager ${cmd}`);
    for (const cmd of ["taskmanager", "jobmanager", "local", "submit"]) {
      const r = await cli([cmd, "--help"]);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("Usage:");
      expect(r.stdout).toContain("--config FILE");
    }
  });

  test("local runs the bundled word count and prints every word's count", async () => {
    const r = await cli(["local", "examples/wordcount.ts"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/FINISHED/);
    const expected = countWords(fs.readFileSync(path.join(ROOT, "examples/data/hamlet.txt"), "utf8"));
    expectSameCounts(parseCountLines(r.stdout.trim().split("\n")), expected);
  });

  test("a failing job makes local exit 1 and print the task, the message and the user's stack", async () => {
    const dir = tempDir();
    const job = path.join(dir, "fails.ts");
    fs.writeFileSync(job, `export default (env) => {\n  env.fromElements(1, 2, 3).map((x) => {\n    if (x === 2) throw new RangeError("two is not allowed");\n    return x;\n  }).print();\n};\n`);
    const r = await cli(["local", job]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("FAILED");
    expect(r.stderr).toContain("Task Collection Source -> Map -> Print to Std. Out (1/1) failed.");
    expect(r.stderr).toContain("RangeError: two is not allowed");
    expect(r.stderr).toMatch(/fails\.ts:3/);
  });

  describe("bad config exits 2 with one precise message", () => {
    const cases: [string, string[], string, RegExp][] = [
      ["missing file", ["--config", "/nonexistent/tm.toml"], "", /config file \/nonexistent\/tm\.toml/],
      ["unknown key", ["--config", "FILE"], "[taskmanager]\nnumberOfSlots = 2\n", /FILE: unknown key "taskmanager\.numberOfSlots" \(did you mean "taskmanager\.numberOfTaskSlots"\?\)/],
      ["wrong type", ["--config", "FILE"], "[taskmanager]\nnumberOfTaskSlots = \"two\"\n", /FILE: taskmanager\.numberOfTaskSlots: expected an integer >= 1/],
      ["port out of range", ["--config", "FILE"], "jobmanager.rpc.port = 70000\n", /FILE: jobmanager\.rpc\.port: expected a port 0\.\.65535, got 70000/],
      ["bad -D flag", ["-D", "heartbeat.interval=soon"], "", /-D flag: heartbeat\.interval/],
    ];
    for (const [name, args, toml, pattern] of cases) {
      test(name, async () => {
        const dir = tempDir();
        const file = path.join(dir, "tm.toml");
        if (toml) fs.writeFileSync(file, toml);
        const r = await cli(["taskmanager", ...args.map((a) => (a === "FILE" ? file : a))]);
        expect(r.code).toBe(2);
        expect(r.stderr.trim().split("\n")).toHaveLength(1);
        expect(r.stderr).toMatch(new RegExp(pattern.source.replaceAll("FILE", file.replaceAll(".", "\\."))));
      });
    }
    test("environment variables are read and checked too", async () => {
      const r = await cli(["jobmanager"], { TM_JOBMANAGER_RPC_PORT: "-1" });
      expect(r.code).toBe(2);
      expect(r.stderr).toContain("TM_JOBMANAGER_RPC_PORT");
    });
  });

  test("unknown command and unknown flag exit 2", async () => {
    const a = await cli(["frobnicate"]);
    expect(a.code).toBe(2);
    expect(a.stderr).toContain('unknown command "frobnicate"');
    const b = await cli(["local", "--bogus", "examples/wordcount.ts"]);
    expect(b.code).toBe(2);
    expect(b.stderr).toContain("--bogus");
  });
});
