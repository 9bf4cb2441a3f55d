// The README, followed literally: the server started with no configuration
// (dev mode) prints what the README shows, the tour's code runs with the
// token it printed, the documents example's curl commands give the answers
// written under them, and the msgpack example connects to `--parser
// msgpack`. The code is taken from README.md itself; only the address
// changes (a free port instead of 3000).
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BIN, freePort } from "./server.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const README = readFileSync(path.join(root, "README.md"), "utf8");

/** The first ```lang block after the heading `heading`. */
function block(heading, lang) {
  const at = README.indexOf(`\n${heading}\n`);
  assert.ok(at >= 0, `README has "${heading}"`);
  const start = README.indexOf("```" + lang + "\n", at);
  assert.ok(start >= 0, `a ${lang} block under "${heading}"`);
  const body = start + lang.length + 4;
  return README.slice(body, README.indexOf("\n```", body) + 1);
}

/** Starts `switchboard args...` in a fresh directory (no configuration at
 * all: no flags, no SWITCHBOARD_* variables) and waits for the dev-mode
 * lines on stdout. */
async function devServer(args = []) {
  const port = await freePort();
  const cwd = mkdtempSync(path.join(tmpdir(), "switchboard-readme-"));
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SWITCHBOARD_")));
  env.SWITCHBOARD_LISTEN = `127.0.0.1:${port}`;
  const child = spawn(BIN, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.resume();
  const deadline = Date.now() + 20_000;
  while (!/dev mode HTTP API key: \S+\n/.test(out)) {
    assert.ok(child.exitCode === null, `the server exited: ${out}`);
    assert.ok(Date.now() < deadline, `no dev-mode lines: ${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; !(await fetch(`${url}/healthz`).then((r) => r.ok, () => false)); i++) {
    assert.ok(i < 200, "the server did not answer");
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    out,
    token: /dev mode token for user 'demo' \(valid 24 h\):\n(\S+)\n/.exec(out)?.[1],
    apiKey: /dev mode HTTP API key: (\S+)\n/.exec(out)?.[1],
    async stop() {
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await exited;
      rmSync(cwd, { recursive: true, force: true });
    },
  };
}

/** Runs README code as an ES module beside this package's node_modules. */
function runModule(code, env) {
  const file = path.join(here, "..", `.readme-${process.pid}-${Date.now()}.mjs`);
  writeFileSync(file, code);
  try {
    return spawnSync(process.execPath, [file], { env: { ...process.env, ...env }, encoding: "utf8", timeout: 20_000 });
  } finally {
    rmSync(file, { force: true });
  }
}

describe("README, followed literally", () => {
  const servers = [];
  after(async () => {
    await Promise.all(servers.map((s) => s.stop()));
  });

  it("dev mode prints the lines the README shows, and the tour runs with its token", async () => {
    const server = await devServer();
    servers.push(server);
    // Each line of the README's sample output starts a line the server printed.
    const sample = block("## Dev mode", "text").split("\n").slice(1, -1);
    for (const line of sample) {
      const prefix = line.split(/eyJ|<|3b1f|'http/)[0];
      assert.ok(server.out.includes(prefix), `the server printed a line starting "${prefix}":\n${server.out}`);
    }
    assert.ok(server.token && server.apiKey);
    const tour = block("## A 30-second tour", "js").replaceAll("http://127.0.0.1:3000", server.url);
    const run = runModule(tour, { TOKEN: server.token });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /success: true/);
    assert.match(run.stdout, /1 messages in history/);
  });

  it("the plain WebSocket example joins, sends and gets its message back", async () => {
    const server = servers[0];
    const code = block("## Plain WebSocket clients", "js").replaceAll("ws://127.0.0.1:3000", server.url.replace("http", "ws"));
    const run = runModule(`import WebSocket from "ws";\nconst token = process.env.TOKEN;\n${code}`, { TOKEN: server.token });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^connected /m);
    assert.match(run.stdout, /^room_msg .*content: 'hi'/ms);
    assert.match(run.stdout, /^ack .*id: 2/ms);
  });

  it("the documents example's curl commands answer what the README says", async () => {
    const server = servers[0];
    const lines = block("## Collaborative documents", "sh").replaceAll("localhost:3000", server.url).split("\n");
    // Commands (with their continuation lines) and the `# {...}` answers under them.
    const steps = [];
    for (const line of lines) {
      if (line.startsWith("# ")) steps[steps.length - 1].answer = line.slice(2);
      else if (line.trim() && steps.length && steps[steps.length - 1].command.endsWith("\\")) steps[steps.length - 1].command += "\n" + line;
      else if (line.trim()) steps.push({ command: line, answer: null });
    }
    assert.equal(steps.length, 2, JSON.stringify(steps));
    for (const { command, answer } of steps) {
      const r = spawnSync("bash", ["-c", `curl -fsS ${command.replace(/^curl /, "")}`], {
        env: { ...process.env, API_KEY: server.apiKey },
        encoding: "utf8",
      });
      assert.equal(r.status, 0, `${command}\n${r.stderr}${r.stdout}`);
      assert.deepEqual(JSON.parse(r.stdout), JSON.parse(answer), command);
    }
  });

  it("the webhook receiver prints the events of a server started as the README says", async () => {
    const port = await freePort();
    const code = block("## Your backend in the loop", "js").replace("listen(4000)", `listen(${port}, () => console.log("up"))`);
    const file = path.join(here, "..", `.readme-receiver-${process.pid}.mjs`);
    writeFileSync(file, code);
    const receiver = spawn(process.execPath, [file], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    receiver.stdout.on("data", (d) => (out += d));
    try {
      for (let i = 0; i < 100 && !out.includes("up"); i++) await new Promise((r) => setTimeout(r, 50));
      const text = readFileSync(path.join(here, "..", "..", "README.md"), "utf8");
      assert.match(text, /--webhook-url\s+http:\/\/127\.0\.0\.1:4000\/ --webhook-secret s3cret/);
      const server = await devServer(["--webhook-url", `http://127.0.0.1:${port}/`, "--webhook-secret", "s3cret"]);
      servers.push(server);
      const r = await fetch(`${server.url}/api/rooms/lobby/messages`, {
        method: "POST",
        headers: { authorization: `Bearer ${server.apiKey}`, "content-type": "application/json" },
        body: JSON.stringify({ content: "hello receiver" }),
      });
      assert.equal(r.status, 201);
      for (let i = 0; i < 100 && !out.includes("hello receiver"); i++) await new Promise((r) => setTimeout(r, 50));
      assert.match(out, /message\.created .*hello receiver/s);
    } finally {
      receiver.kill();
      rmSync(file, { force: true });
    }
  });

  it("the msgpack example connects to a server started with --parser msgpack", async () => {
    const [start] = block("## msgpack", "sh").split("\n");
    assert.equal(start, "switchboard --parser msgpack");
    const server = await devServer(start.split(" ").slice(1));
    servers.push(server);
    const code = block("## msgpack", "js")
      .replace(/const token = "[^"]*";/, "const token = process.env.TOKEN;")
      .replaceAll("http://127.0.0.1:3000", server.url)
      .concat("socket.close();\n");
    const run = runModule(code, { TOKEN: server.token });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /userId: 'demo'/);
  });
});
