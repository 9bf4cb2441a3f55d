#!/usr/bin/env node
// The `yjs` benchmark: switchboard against y-socket.io's own Node server
// (the `YSocketIO` class of y-socket.io 1.1.3 on socket.io 4.8,
// benches/node-reference/yjs-server.js), side by side in one run, with real
// clients: y-socket.io's `SocketIOProvider` (yjs 13, socket.io-client 4.8).
//
//   (cd benches/node-reference && npm ci)         # once
//   cargo build --release --bin switchboard       # once
//   node benches/yjs/run.mjs                      # ~2.5 min, writes benches/results/yjs.json
//   node benches/yjs/run.mjs --quick              # < 1 min smoke run, writes nothing
//
// Options: --servers switchboard,switchboard-sqlite,node (the default: all
// three) · --editors 2,10,50 · --rates 10,10,3 (updates/s per editor, for
// each editor count) or --rate R (the same for all) ·
// --docs M (documents for the memory step, 200) · --secs S (measured seconds
// per step) · --out FILE. SWITCHBOARD_BIN overrides target/release/switchboard.
//
// What one run does, for each server in turn (a fresh process for the editor
// steps and another for the memory step):
//
// * editors: N editors (N = 2, 10, 50), each its own user with its own
//   provider and Y.Doc, on one document. Each appends a token `|<editor>:<seq>|`
//   to one Y.Text at R updates/s (10/s; 3/s for 50 editors) at fixed
//   intended times (one Yjs update per keystroke-like edit, as the provider
//   sends them); the others find the token in the update their Y.Doc
//   applies from the server and count the time from the edit's intended time
//   (no coordinated omission: a late driver or server shows as latency). After a warm-up, a measured window; then a drain of at most 5 s
//   and a check that every editor holds the same text. Server CPU: utime +
//   stime of its process over the window, per update sent in it (summed over
//   /proc/<pid>/task/*/schedstat, in ns, where no thread ended in the
//   window; else /proc/<pid>/stat's 10 ms ticks; both are in the JSON). The
//   driver's own CPU over the window is reported next to it. The editors
//   start with no awareness state, so that awareness traffic stays out of
//   the window; then editor 0 sets its awareness 3 times (a cursor move),
//   and the awareness messages all editors receive, and the server CPU, are
//   counted per change.
// * memory: RSS of a fresh server after 20 warm-up documents came and went,
//   then with M documents open (one provider each, empty), then with each of
//   them holding ~1 KB of text typed as 20 updates; per document. For Node,
//   also after a full GC, with V8's heap then.
//
// YJS_BENCH_DEBUG=1 prints the deliveries that took over 50 ms.
//
// The driver pins itself to CPU 1 and each server to CPU 0 (taskset), as the
// Rust loadgen does; on this 2-vCPU VM the driver shares the machine.
import { spawn, execFileSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { closeSync, mkdtempSync, readdirSync, readFileSync, writeFileSync, rmSync, openSync, existsSync } from "node:fs";
import { tmpdir, cpus, totalmem } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const NODE_REF = path.join(ROOT, "benches", "node-reference");
// yjs, y-socket.io and socket.io-client come from benches/node-reference
// (one `npm ci`), so the driver and the reference server use the same versions.
const requireRef = createRequire(path.join(NODE_REF, "package.json"));
let Y, SocketIOProvider, Awareness;
try {
  Y = await import(requireRef.resolve("yjs"));
  ({ SocketIOProvider } = await import(requireRef.resolve("y-socket.io")));
  ({ Awareness } = await import(requireRef.resolve("y-protocols/awareness")));
} catch (e) {
  console.error(`cannot load yjs / y-socket.io (${e.message}): run \`npm ci\` in benches/node-reference`);
  process.exit(2);
}

// ---------------------------------------------------------------- options
const argv = process.argv.slice(2);
const flag = (name) => argv.includes(name);
const opt = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 && i + 1 < argv.length ? argv[i + 1] : dflt;
};
const QUICK = flag("--quick");
const SERVERS = opt("--servers", "switchboard,switchboard-sqlite,node").split(",");
const EDITORS = opt("--editors", QUICK ? "2,10" : "2,10,50").split(",").map(Number);
// Updates/s per editor, one per editor count: 10/s (a fast typist's
// keystrokes) up to 10 editors; 3/s for 50, since the driver, one Node
// process on one core, applies at most ~12,000 Yjs updates/s across its
// editors' documents (50 at 10/s would be 24,500 deliveries/s).
const RATES = (() => {
  const r = opt("--rate", null);
  if (r !== null) return EDITORS.map(() => Number(r));
  const given = opt("--rates", null);
  if (given !== null) return given.split(",").map(Number);
  return EDITORS.map((n) => (n >= 50 ? 3 : 10));
})();
const DOCS = Number(opt("--docs", QUICK ? 50 : 200));
const WARM_SECS = QUICK ? 1 : 2;
const SECS = Number(opt("--secs", QUICK ? 2 : 8));
const DRAIN_MS = 5000;
const SETTLE_MS = QUICK ? 1000 : 1500; // before each RSS reading of the memory step
const DOC_UPDATES = 20; // updates typed into each document of the memory step
const DOC_CHUNK = 50; // characters per update there (~1 KB per document)
const OUT = opt("--out", QUICK ? null : path.join(ROOT, "benches", "results", "yjs.json"));
// Resolved here: the servers run in a temporary directory.
const BIN = process.env.SWITCHBOARD_BIN ? path.resolve(process.env.SWITCHBOARD_BIN) : path.join(ROOT, "target", "release", "switchboard");
const SECRET = "yjs-bench-secret-yjs-bench-secret-yjs-bench";
const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
const PAGE = Number(execFileSync("getconf", ["PAGESIZE"], { encoding: "utf8" }).trim()) || 4096;

process.setMaxListeners(0); // every provider adds an 'exit' listener

const DEBUG = !!process.env.YJS_BENCH_DEBUG;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(cond, ms) {
  const by = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > by) return false;
    await sleep(10);
  }
  return true;
}

// ---------------------------------------------------------------- pinning
const NCPU = cpus().length;
const PIN = NCPU >= 2 && hasTaskset();
function hasTaskset() {
  try {
    execFileSync("taskset", ["-V"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
if (PIN) execFileSync("taskset", ["-a", "-p", "-c", "1", String(process.pid)], { stdio: "ignore" });

// ---------------------------------------------------------------- /proc
function cpuTicks(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]); // utime + stime (fields 14, 15)
}
// The same CPU time in nanoseconds, summed over the threads alive now (tid ->
// ns): utime + stime above count in clock ticks (10 ms), coarse for a step
// whose server spends a few tens of milliseconds.
function threadNs(pid) {
  const m = new Map();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      m.set(tid, Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]));
    } catch {}
  }
  return m;
}
/** CPU seconds between two threadNs() readings, or null if a thread ended in between (its time is lost). */
function threadSecs(before, after) {
  let ns = 0;
  for (const [tid, t0] of before) {
    const t1 = after.get(tid);
    if (t1 === undefined) return null;
    ns += t1 - t0;
  }
  for (const [tid, t1] of after) if (!before.has(tid)) ns += t1;
  return Number.isFinite(ns) && before.size > 0 ? ns / 1e9 : null; // null too where schedstat is missing
}
/** Busy CPU seconds of the whole machine so far (all CPUs, /proc/stat): what
 * neither the server nor the driver used in a window was someone else's. */
function machineBusySecs() {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  return (f[0] + f[1] + f[2] + f[5] + f[6]) / CLK_TCK;
}
const rssKiB = (pid) => Number(readFileSync(`/proc/${pid}/statm`, "utf8").split(" ")[1]) * (PAGE / 1024);

// ---------------------------------------------------------------- tokens
const b64u = (s) => Buffer.from(s).toString("base64url");
function token(sub) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64u(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64u(JSON.stringify({ sub, name: sub, iat: now, exp: now + 3600 }));
  const sig = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

// ---------------------------------------------------------------- servers
async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

let sbHelp = null;
function switchboardHelp() {
  if (sbHelp === null) sbHelp = execFileSync(BIN, ["--help"], { encoding: "utf8" });
  return sbHelp;
}

const started = new Set(); // children of this run, killed by pid on the way out
async function startServer(kind) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), "yjs-bench-"));
  const log = path.join(dir, "server.log");
  const fd = openSync(log, "w");
  let cmd, args, env, cwd;
  if (kind === "node") {
    cmd = process.execPath;
    args = ["--expose-gc", path.join(NODE_REF, "yjs-server.js")];
    env = { ...process.env, PORT: String(port), JWT_SECRET: SECRET };
    cwd = NODE_REF;
  } else {
    if (!existsSync(BIN)) throw new Error(`${BIN} missing: cargo build --release --bin switchboard`);
    const db = kind === "switchboard-sqlite" ? `sqlite://${dir}/switchboard.db` : "memory";
    cmd = BIN;
    args = ["--listen", `127.0.0.1:${port}`, "--database-url", db];
    // Only where --help lists the flag itself: newer builds serve Yjs by
    // default and list --no-yjs-socketio instead.
    if (/^\s*--yjs-socketio\b/m.test(switchboardHelp())) args.push("--yjs-socketio");
    env = { ...process.env, SWITCHBOARD_JWT_SECRET: SECRET };
    cwd = dir;
  }
  if (PIN) {
    args = ["-c", "0", cmd, ...args];
    cmd = "taskset";
  }
  const child = spawn(cmd, args, { env, cwd, stdio: ["ignore", fd, fd] });
  closeSync(fd);
  started.add(child);
  child.on("exit", () => started.delete(child));
  const url = `http://127.0.0.1:${port}`;
  const by = Date.now() + 15000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${kind} exited with ${child.exitCode}: ${readFileSync(log, "utf8").slice(-2000)}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {}
    if (Date.now() > by) {
      child.kill("SIGKILL");
      throw new Error(`${kind} did not answer /healthz within 15 s`);
    }
    await sleep(50);
  }
  // Returns the server's log and how it ended: `early` if it had exited
  // before it was told to stop (a crash), else its exit code after SIGTERM.
  const stop = async () => {
    const early = child.exitCode !== null || child.signalCode !== null;
    if (!early) {
      const gone = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      if (!(await Promise.race([gone.then(() => true), sleep(5000).then(() => false)]))) {
        child.kill("SIGKILL");
        await gone;
      }
    }
    const text = readFileSync(log, "utf8");
    rmSync(dir, { recursive: true, force: true });
    return { text, early, exit: child.signalCode ?? child.exitCode };
  };
  return { kind, url, pid: child.pid, child, stop, log };
}

// ---------------------------------------------------------------- editors
const providers = new Set();
/** A provider as an editor makes one. `awareness: false`: its awareness
 * starts without a local state, so it sends none until one is set (the
 * editor steps; see awarenessProbe). */
function openEditor(url, docName, sub, { awareness = true } = {}) {
  const ydoc = new Y.Doc();
  const aw = new Awareness(ydoc);
  if (awareness) aw.setLocalStateField("user", { name: sub });
  else aw.setLocalState(null);
  const p = new SocketIOProvider(url, docName, ydoc, { auth: { token: token(sub) }, disableBc: true, awareness: aw });
  providers.add(p);
  let awarenessIn = 0;
  p.socket.on("awareness-update", () => awarenessIn++);
  const errors = [];
  p.on("connection-error", (e) => errors.push(String(e?.message ?? e)));
  let disconnects = 0;
  p.on("connection-close", () => disconnects++);
  return { p, ydoc, text: ydoc.getText("t"), errors, disconnects: () => disconnects, awarenessIn: () => awarenessIn };
}
function closeEditor(e) {
  e.p.destroy();
  e.p.socket.io.reconnection(false);
  e.p.socket.disconnect();
  providers.delete(e.p);
}

function quantile(sorted, q) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}
const r2 = (x) => (x === null || x === undefined || Number.isNaN(x) ? null : Math.round(x * 100) / 100);

/** N editors on one document, each appending a token at RATE/s. */
async function editorsStep(srv, n, RATE) {
  const docName = `bench-${n}-${Date.now()}`;
  const eds = [];
  for (let i = 0; i < n; i++) eds.push(openEditor(srv.url, docName, `editor-${i}`, { awareness: false }));
  if (!(await until(() => eds.every((e) => e.p.synced), 20000))) {
    const bad = eds.filter((e) => !e.p.synced);
    eds.forEach(closeEditor);
    throw new Error(`${bad.length} of ${n} editors not synced in 20 s: ${bad[0].errors.join("; ")}`);
  }

  const sentAt = new Map(); // "i:seq" -> intended time (ms, performance.now)
  const pending = new Map(); // "i:seq" -> receivers still to see it (measured tokens only)
  let lat = new Float64Array(1 << 16);
  let nlat = 0;
  const slow = [];
  let arrivalsInWindow = 0;
  let measuring = false;
  let measuredStart = Infinity;
  let measuredEnd = Infinity;
  // Arrivals are read from the raw update each editor's Y.Doc integrates
  // (the `update` event of a transaction the provider applied, i.e. what came
  // from the server): a Yjs update carries inserted text verbatim, so the
  // tokens are found in its bytes. (Reading a Y.Text change event's `delta`
  // walks the whole text each time, which made the driver the bottleneck.)
  const TOKEN = /\|(\d+):(\d+)\|/g;
  eds.forEach((e, j) => {
    e.ydoc.on("update", (update, origin) => {
      if (origin !== e.p) return; // only what came from the server
      const now = performance.now();
      const text = Buffer.from(update.buffer, update.byteOffset, update.byteLength).toString("latin1");
      for (const m of text.matchAll(TOKEN)) {
        if (Number(m[1]) === j) continue;
        const key = `${m[1]}:${m[2]}`;
        const t = sentAt.get(key);
        if (t === undefined) continue;
        if (measuring) arrivalsInWindow++;
        const left = pending.get(key);
        if (left === undefined) continue; // a warm-up token
        if (nlat === lat.length) {
          const bigger = new Float64Array(lat.length * 2);
          bigger.set(lat);
          lat = bigger;
        }
        lat[nlat++] = now - t;
        if (DEBUG && now - t > 50) slow.push([Math.round(t - measuredStart), key, Math.round(now - t)]);
        if (left === 1) pending.delete(key);
        else pending.set(key, left - 1);
      }
    });
  });

  // Fixed intended times: editor i sends at t0 + (i / n + k) / RATE seconds.
  const period = 1000 / RATE;
  const seq = new Array(n).fill(0);
  const t0 = performance.now() + 50;
  measuredStart = t0 + WARM_SECS * 1000;
  measuredEnd = measuredStart + SECS * 1000;
  let sent = 0;
  let late = 0; // sends made more than 5 ms after their intended time
  let cpu0, cpu1, thr0, thr1, busy0, busy1, drv0, drv1, wall0, wall1;
  await new Promise((resolve) => {
    const tick = () => {
      const now = performance.now();
      if (measuring === false && now >= measuredStart) {
        measuring = true;
        cpu0 = cpuTicks(srv.pid);
        thr0 = threadNs(srv.pid);
        busy0 = machineBusySecs();
        drv0 = process.cpuUsage();
        wall0 = now;
      }
      let nextDue = Infinity;
      for (let i = 0; i < n; i++) {
        for (;;) {
          const due = t0 + (i / n + seq[i]) * period;
          if (due >= measuredEnd) break;
          if (due > now) {
            nextDue = Math.min(nextDue, due);
            break;
          }
          seq[i]++;
          const key = `${i}:${seq[i]}`;
          sentAt.set(key, due);
          if (due >= measuredStart) {
            pending.set(key, n - 1);
            sent++;
            if (now - due > 5) late++;
          }
          const e = eds[i];
          e.text.insert(e.text.length, `|${key}|`); // one Yjs update, sent by the provider
        }
      }
      if (nextDue === Infinity) {
        const stop = () => {
          const t = performance.now();
          if (t < measuredEnd) return setTimeout(stop, Math.max(1, measuredEnd - t));
          cpu1 = cpuTicks(srv.pid);
          thr1 = threadNs(srv.pid);
          busy1 = machineBusySecs();
          drv1 = process.cpuUsage(drv0);
          wall1 = t;
          measuring = false;
          resolve();
        };
        return stop();
      }
      setTimeout(tick, Math.max(0, nextDue - performance.now()));
    };
    setTimeout(tick, Math.max(0, t0 - performance.now()));
  });
  const windowSecs = (wall1 - wall0) / 1000;
  await until(() => pending.size === 0, DRAIN_MS);
  const undelivered = [...pending.values()].reduce((a, b) => a + b, 0);
  const want = eds[0].text.toString();
  const converged = await until(() => eds.every((e) => e.text.toString() === eds[0].text.toString()), 3000);
  if (DEBUG && slow.length) console.error(`${srv.kind} n=${n}: ${slow.length} deliveries over 50 ms (ms into window, token, ms):`, JSON.stringify(slow.slice(0, 40)));
  const sorted = lat.subarray(0, nlat).sort();
  const expected = sent * (n - 1);
  const driverCpu = (drv1.user + drv1.system) / 1e6 / windowSecs;
  const statSecs = (cpu1 - cpu0) / CLK_TCK;
  const schedSecs = threadSecs(thr0, thr1);
  // The per-thread figure (ns) where no thread ended in the window, else /proc/<pid>/stat's.
  const serverCpuSecs = schedSecs ?? statSecs;
  const row = {
    scenario: "yjs-editors",
    server: srv.kind,
    editors: n,
    rate_per_editor: RATE,
    target_updates_per_sec: n * RATE,
    window_secs: r2(windowSecs),
    updates_sent: sent,
    sent_per_sec: r2(sent / windowSecs),
    delivered_per_sec: r2(arrivalsInWindow / windowSecs),
    deliveries_expected: expected,
    delivered: nlat,
    undelivered,
    late_sends: late,
    p50_ms: r2(quantile(sorted, 0.5)),
    p99_ms: r2(quantile(sorted, 0.99)),
    max_ms: r2(sorted.length ? sorted[sorted.length - 1] : null),
    server_cpu_secs: Math.round(serverCpuSecs * 1e4) / 1e4,
    server_cpu_secs_stat: r2(statSecs),
    server_cpu_source: schedSecs === null ? "stat utime+stime (10 ms ticks)" : "task schedstat (ns)",
    server_cpu_share: r2(serverCpuSecs / windowSecs),
    server_cpu_us_per_update: sent ? Math.round((serverCpuSecs * 1e6) / sent) : null,
    server_cpu_us_per_delivery: expected ? r2((serverCpuSecs * 1e6) / expected) : null,
    server_cpu_us_per_update_stat: sent ? Math.round((statSecs * 1e6) / sent) : null,
    driver_cpu_share: r2(driverCpu),
    // CPU (in cores) that neither the server nor the driver used in the window: other processes on the VM.
    others_cpu_share: r2(Math.max(0, busy1 - busy0 - serverCpuSecs - driverCpu * windowSecs) / windowSecs),
    converged,
    doc_chars: want.length,
    connect_errors: eds.reduce((a, e) => a + e.errors.length, 0),
    disconnects: eds.reduce((a, e) => a + e.disconnects(), 0),
  };
  // Other processes on this shared VM took more than a third of a CPU in the window: the figures are not this server's alone.
  row.noisy = row.others_cpu_share > 0.33;
  row.valid = row.converged && undelivered === 0 && row.driver_cpu_share <= 0.8 && row.disconnects === 0 && !row.noisy;
  Object.assign(row, await awarenessProbe(srv, eds));
  eds.forEach(closeEditor);
  await sleep(300);
  return row;
}

/** Node's RSS after a full GC, and V8's heap then (KiB); null for switchboard. */
async function rssAfterGc(srv) {
  if (srv.kind !== "node") return null;
  process.kill(srv.pid, "SIGUSR2");
  await sleep(1000);
  const lines = readFileSync(srv.log, "utf8").split("\n").filter((l) => l.startsWith("memory "));
  const mem = lines.length ? JSON.parse(lines[lines.length - 1].slice(7)) : {};
  if (process.env.YJS_BENCH_DEBUG) console.error("node memory", JSON.stringify(mem), "rss", rssKiB(srv.pid));
  return { rss: rssKiB(srv.pid), heapUsed: (mem.heapUsed ?? NaN) / 1024, external: ((mem.external ?? NaN) + (mem.arrayBuffers ?? 0)) / 1024 };
}

/** Types ~1 KB into each editor's document, as DOC_UPDATES updates (one
 * round over all documents every max(20, M/5) ms, so that no socket nears a
 * rate limit); then asks the server for each whole document (a sync-step-1
 * with an empty state vector, answered in its ack) until each is whole.
 * Returns how many were still short at the deadline, and how long after the
 * last round the server's copies were all whole (catchUpMs; polls: 1 means
 * every document read whole at the first ask). */
async function typeDocs(eds) {
  for (let u = 0; u < DOC_UPDATES; u++) {
    for (const e of eds) e.text.insert(e.text.length, `${u % 10}`.repeat(DOC_CHUNK));
    await sleep(Math.max(20, eds.length / 5));
  }
  const wantLen = DOC_UPDATES * DOC_CHUNK;
  // A server that stores before it applies may still be writing the burst
  // (SQLite: one transaction per update): each document gets until the
  // deadline to be whole; short means missing then, not late.
  const deadline = Date.now() + 15000;
  const typed = performance.now();
  let short = 0;
  let polls = 0;
  for (const e of eds) {
    let whole = false;
    let asks = 0;
    while (!whole) {
      asks++;
      try {
        const full = await e.p.socket.timeout(10000).emitWithAck("sync-step-1", Y.encodeStateVector(new Y.Doc()));
        const d = new Y.Doc();
        Y.applyUpdate(d, new Uint8Array(full));
        whole = d.getText("t").length === wantLen;
      } catch {}
      if (whole || Date.now() > deadline) break;
      await sleep(100);
    }
    if (!whole) short++;
    polls = Math.max(polls, asks);
  }
  return { short, catchUpMs: Math.round(performance.now() - typed), polls };
}

/**
 * Awareness, apart from the typing window: editor 0 sets its awareness state
 * (as a cursor move does) AWARENESS_CHANGES times, each once the previous one
 * is quiet (no awareness message for 300 ms); counts the awareness-update
 * messages all editors receive and the server's CPU, per change. The
 * provider sends every awareness update it applies back to the server (its
 * 'update' listener has no origin check), so a server that relays whatever
 * it gets multiplies each change by the editors again.
 */
const AWARENESS_CHANGES = 3;
async function awarenessProbe(srv, eds) {
  const total = () => eds.reduce((a, e) => a + e.awarenessIn(), 0);
  const quiet = async () => {
    let last = total();
    let since = Date.now();
    const by = Date.now() + 15000;
    while (Date.now() - since < 300 && Date.now() < by) {
      await sleep(25);
      const t = total();
      if (t !== last) {
        last = t;
        since = Date.now();
      }
    }
  };
  await quiet();
  const in0 = total();
  const thr0 = threadNs(srv.pid);
  const cpu0 = cpuTicks(srv.pid);
  const t0 = performance.now();
  for (let k = 0; k < AWARENESS_CHANGES; k++) {
    eds[0].p.awareness.setLocalState({ user: { name: "editor-0" }, cursor: { index: k } });
    await quiet();
  }
  const secs = threadSecs(thr0, threadNs(srv.pid)) ?? (cpuTicks(srv.pid) - cpu0) / CLK_TCK;
  return {
    awareness_msgs_per_change: r2((total() - in0) / AWARENESS_CHANGES),
    awareness_server_cpu_us_per_change: Math.round((secs * 1e6) / AWARENESS_CHANGES),
    awareness_settle_ms_per_change: Math.round((performance.now() - t0) / AWARENESS_CHANGES - 300),
  };
}

/** RSS with M documents held open, empty and then with ~1 KB each. */
async function memoryStep(srv, m) {
  // Warm-up: 20 documents are opened, typed into as below and closed, so
  // that first-use allocations (code paths, JIT, V8's young generation
  // growing under load, allocator pools) are in the baseline rather than in
  // the per-document figure.
  const warm = [];
  for (let j = 0; j < 20; j++) warm.push(openEditor(srv.url, `warm-${j}`, `warm-${j}`));
  await until(() => warm.every((e) => e.p.synced), 10000);
  await typeDocs(warm);
  warm.forEach(closeEditor);
  await sleep(SETTLE_MS);
  const rss0 = rssKiB(srv.pid);
  const rss0gc = await rssAfterGc(srv);

  const eds = [];
  for (let i = 0; i < m; i += 20) {
    const batch = [];
    for (let j = i; j < Math.min(m, i + 20); j++) batch.push(openEditor(srv.url, `mem-${j}`, `holder-${j}`));
    if (!(await until(() => batch.every((e) => e.p.synced), 20000))) {
      const bad = batch.find((e) => !e.p.synced);
      [...eds, ...batch].forEach(closeEditor);
      throw new Error(`memory step: a document did not sync: ${bad.errors.join("; ")}`);
    }
    eds.push(...batch);
  }
  await sleep(SETTLE_MS);
  const rssOpen = rssKiB(srv.pid);

  const { short, catchUpMs, polls } = await typeDocs(eds);
  const wantLen = DOC_UPDATES * DOC_CHUNK;
  await sleep(SETTLE_MS + 500);
  const rssFull = rssKiB(srv.pid);
  const rssFullGc = await rssAfterGc(srv);
  const row = {
    scenario: "yjs-memory",
    server: srv.kind,
    documents: m,
    chars_per_doc: wantLen,
    updates_per_doc: DOC_UPDATES,
    rss_before_kib: Math.round(rss0),
    rss_open_kib: Math.round(rssOpen),
    rss_loaded_kib: Math.round(rssFull),
    kib_per_open_doc: r2((rssOpen - rss0) / m),
    kib_per_loaded_doc: r2((rssFull - rss0) / m),
    // Node only: RSS after a full GC (SIGUSR2 to yjs-server.js under --expose-gc).
    rss_before_gc_kib: rss0gc === null ? null : Math.round(rss0gc.rss),
    rss_loaded_gc_kib: rssFullGc === null ? null : Math.round(rssFullGc.rss),
    kib_per_loaded_doc_after_gc: rss0gc === null ? null : r2((rssFullGc.rss - rss0gc.rss) / m),
    // ...and what V8's heap (JS objects) grew by per document after that GC.
    heap_used_kib_per_loaded_doc: rss0gc === null ? null : r2((rssFullGc.heapUsed - rss0gc.heapUsed) / m),
    docs_short: short,
    // From the last round of typing until every document had read whole;
    // catch_up_polls 1: all whole at the first ask (the time is the reads').
    catch_up_ms: catchUpMs,
    catch_up_polls: polls,
    disconnects: eds.reduce((a, e) => a + e.disconnects(), 0),
  };
  row.valid = short === 0 && row.disconnects === 0;
  eds.forEach(closeEditor);
  await sleep(300);
  return row;
}

// ---------------------------------------------------------------- the run
function logProblems(kind, { text, early, exit }) {
  // switchboard's two start-up notes on this bare configuration (no --api-key, no --cors-origin) are left out.
  const lines = text.split("\n").filter((l) => /\b(WARN|ERROR|panick|Error|error:)/.test(l) && !/backend HTTP API is off|no --cors-origin/.test(l));
  return { server: kind, lines: lines.length, first: lines.slice(0, 5), exited_early: early, exit };
}

function machine() {
  const cpu = readFileSync("/proc/cpuinfo", "utf8").match(/model name\s*:\s*(.*)/)?.[1] ?? "?";
  const kernel = readFileSync("/proc/sys/kernel/osrelease", "utf8").trim();
  let sbVersion = null;
  try {
    sbVersion = execFileSync(BIN, ["--version"], { encoding: "utf8" }).trim();
  } catch {}
  const ver = (p) => {
    try {
      return JSON.parse(readFileSync(requireRef.resolve(`${p}/package.json`), "utf8")).version;
    } catch {
      return null;
    }
  };
  let commit = null;
  try {
    commit = execFileSync("git", ["-C", ROOT, "rev-parse", "--short", "HEAD"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {}
  return {
    machine: { cpu, cores: NCPU, memory_kib: Math.round(totalmem() / 1024), kernel, pinned: PIN ? "server CPU 0, driver CPU 1" : "not pinned" },
    versions: { switchboard: sbVersion, tree_commit: commit, node: process.version, "socket.io": ver("socket.io"), "socket.io-client": ver("socket.io-client"), "y-socket.io": ver("y-socket.io"), yjs: ver("yjs") },
  };
}

const LABEL = { switchboard: "switchboard (memory store)", "switchboard-sqlite": "switchboard (SQLite)", node: "y-socket.io 1.1.3 (Node)" };

function fmt(x, digits = 0) {
  if (x === null || x === undefined) return "—";
  return Number(x).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function table(rows) {
  const kinds = SERVERS;
  const out = [];
  const head = ["editors", "figure", ...kinds.map((k) => LABEL[k] ?? k)];
  out.push(`| ${head.join(" | ")} |`);
  out.push(`|${head.map((_, i) => (i < 2 ? "---" : "---:")).join("|")}|`);
  for (const n of EDITORS) {
    const cell = (k, f) => f(rows.find((r) => r.server === k && r.scenario === "yjs-editors" && r.editors === n));
    const figures = [
      ["updates/s sent (target)", (r) => `${fmt(r?.sent_per_sec)} (${fmt(r?.target_updates_per_sec)})`],
      ["updates/s delivered", (r) => fmt(r?.delivered_per_sec)],
      ["p50 / p99 ms", (r) => `${fmt(r?.p50_ms, 2)} / ${fmt(r?.p99_ms, 2)}`],
      ["server CPU µs/update", (r) => fmt(r?.server_cpu_us_per_update)],
      ["driver CPU share (others on the VM)", (r) => `${fmt(r && r.driver_cpu_share * 100)}% (${fmt(r && r.others_cpu_share * 100)}%)`],
      ["awareness msgs delivered per cursor move", (r) => fmt(r?.awareness_msgs_per_change)],
      ["server CPU µs per cursor move", (r) => fmt(r?.awareness_server_cpu_us_per_change)],
      ["valid", (r) => (r ? (r.valid ? "yes" : `NO (${[!r.converged && "diverged", r.undelivered && `${r.undelivered} undelivered`, r.disconnects && `${r.disconnects} disconnects`, r.driver_cpu_share > 0.8 && "driver-bound", r.noisy && "other processes busy"].filter(Boolean).join(", ")})`) : "—")],
    ];
    const label = `${n} × ${RATES[EDITORS.indexOf(n)]}/s`;
    for (const [name, f] of figures) out.push(`| ${label} | ${name} | ${kinds.map((k) => cell(k, f)).join(" | ")} |`);
  }
  const mem = (k) => rows.find((r) => r.server === k && r.scenario === "yjs-memory");
  out.push(`| ${DOCS} docs | KiB RSS per open doc, empty (its connection included) | ${kinds.map((k) => fmt(mem(k)?.kib_per_open_doc, 1)).join(" | ")} |`);
  out.push(`| ${DOCS} docs | KiB RSS per doc with ${fmt(DOC_UPDATES * DOC_CHUNK)} chars in ${DOC_UPDATES} updates | ${kinds.map((k) => fmt(mem(k)?.kib_per_loaded_doc, 1)).join(" | ")} |`);
  out.push(`| ${DOCS} docs | Node only: KiB RSS per doc after a full GC; V8 heap used per doc | ${kinds.map((k) => { const r = mem(k); return r?.kib_per_loaded_doc_after_gc != null ? `${fmt(r.kib_per_loaded_doc_after_gc, 1)}; ${fmt(r.heap_used_kib_per_loaded_doc, 1)}` : "—"; }).join(" | ")} |`);
  out.push(`| ${DOCS} docs | server's copies all whole, ms after the last update | ${kinds.map((k) => { const r = mem(k); return r ? (r.docs_short ? `${r.docs_short} docs short after ${fmt(r.catch_up_ms)}` : r.catch_up_polls > 1 ? fmt(r.catch_up_ms) : `at once (${fmt(r.catch_up_ms)})`) : "—"; }).join(" | ")} |`);
  out.push(`| ${DOCS} docs | RSS MiB before → open → loaded | ${kinds.map((k) => { const r = mem(k); return r ? `${fmt(r.rss_before_kib / 1024, 1)} → ${fmt(r.rss_open_kib / 1024, 1)} → ${fmt(r.rss_loaded_kib / 1024, 1)}` : "—"; }).join(" | ")} |`);
  return out.join("\n");
}

async function main() {
  const began = Date.now();
  const info = machine();
  console.error(`yjs bench: servers ${SERVERS.join(", ")}; editors ${EDITORS.map((n, i) => `${n} at ${RATES[i]}/s each`).join(", ")}; ${WARM_SECS} s warm-up + ${SECS} s measured; memory step ${DOCS} docs; ${PIN ? "pinned" : "NOT pinned"}`);
  const rows = [];
  const logs = [];
  for (const kind of SERVERS) {
    let srv = await startServer(kind);
    try {
      for (const n of EDITORS) {
        const row = await editorsStep(srv, n, RATES[EDITORS.indexOf(n)]);
        rows.push(row);
        console.log(JSON.stringify(row));
      }
    } finally {
      logs.push(logProblems(`${kind} (editors)`, await srv.stop()));
    }
    srv = await startServer(kind);
    try {
      const row = await memoryStep(srv, DOCS);
      rows.push(row);
      console.log(JSON.stringify(row));
    } finally {
      logs.push(logProblems(`${kind} (memory)`, await srv.stop()));
    }
  }
  const secs = Math.round((Date.now() - began) / 1000);
  console.log();
  console.log(table(rows));
  console.log();
  for (const l of logs) {
    if (l.lines) console.log(`server log of ${l.server}: ${l.lines} warning/error lines, first: ${l.first.join(" ⏎ ")}`);
    if (l.exited_early) console.log(`${l.server}: the server exited by itself during the run (${l.exit})`);
    else if (l.exit !== 0 && l.exit !== "SIGTERM") console.log(`${l.server}: exit ${l.exit} after SIGTERM`);
  }
  console.log(`${secs} s in all; ${info.machine.cpu}, ${info.machine.cores} CPUs (${info.machine.pinned}): the driver shares the machine with the server.`);
  if (OUT) {
    const doc = {
      date: new Date().toISOString().slice(0, 10),
      ...info,
      settings: { editors: EDITORS, rates_per_editor: RATES, warm_secs: WARM_SECS, measured_secs: SECS, docs: DOCS, doc_updates: DOC_UPDATES, doc_chunk_chars: DOC_CHUNK, switchboard_store: { switchboard: "memory", "switchboard-sqlite": "sqlite file" }, node_store: "memory (y-socket.io default)" },
      rows,
      server_logs: logs,
      run_secs: secs,
    };
    writeFileSync(OUT, JSON.stringify(doc, null, 2) + "\n");
    console.log(`wrote ${path.relative(ROOT, OUT)}`);
  }
}

function cleanup() {
  for (const p of providers) {
    try {
      p.destroy();
      p.socket.io.reconnection(false);
      p.socket.disconnect();
    } catch {}
  }
  for (const c of started) {
    try {
      c.kill("SIGKILL");
    } catch {}
  }
}
process.on("SIGINT", () => {
  cleanup();
  process.exit(130);
});
// The whole run is bounded: past this, stop everything.
const hardStop = setTimeout(() => {
  console.error("yjs bench: over its time bound, stopping");
  cleanup();
  process.exit(3);
}, (QUICK ? 120 : 420) * 1000);
hardStop.unref();

main()
  .then(() => {
    cleanup();
    process.exit(0);
  })
  .catch((e) => {
    console.error(e);
    cleanup();
    process.exit(1);
  });
