//! Measuring and reporting: latency histograms, CPU accounting for the
//! generator and the server, and the JSON written to benches/results/.

use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::common::sh;
use crate::servers::{Kind, Server, self_cpu_secs};

/// Latency in microseconds, 1 µs .. 120 s, 3 significant digits.
pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).unwrap()
}

pub fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return f64::NAN;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}

/// CPU used by the generator and the server over a stretch of wall time.
pub struct Meter {
    t0: Instant,
    gen0: f64,
    srv0: f64,
}

pub struct Metered {
    pub secs: f64,
    /// Fraction of one core the generator used; over 0.8 marks a run invalid.
    pub generator_cpu: f64,
    pub server_cpu_secs: f64,
}

impl Meter {
    pub fn start(server: &Server) -> Meter {
        Meter {
            t0: Instant::now(),
            gen0: self_cpu_secs(),
            srv0: server.cpu_secs(),
        }
    }

    pub fn stop(&self, server: &Server) -> Metered {
        let secs = self.t0.elapsed().as_secs_f64();
        Metered {
            secs,
            generator_cpu: (self_cpu_secs() - self.gen0) / secs,
            server_cpu_secs: server.cpu_secs() - self.srv0,
        }
    }
}

pub const GENERATOR_CPU_LIMIT: f64 = 0.8;

/// One scenario's rows, written to benches/results/<scenario>.json unless
/// the run was partial (a subset of servers or sizes) or a debug build.
pub struct Results {
    scenario: &'static str,
    /// The file's name without `.json`: the scenario's name unless set.
    file: String,
    /// Fields added to every row from here on (see `tag`).
    tags: serde_json::Map<String, Value>,
    rows: Vec<Value>,
    summary: Vec<Value>,
    pub complete: bool,
}

impl Results {
    pub fn new(scenario: &'static str, complete: bool) -> Results {
        Results {
            scenario,
            file: scenario.to_owned(),
            tags: serde_json::Map::new(),
            rows: Vec::new(),
            summary: Vec::new(),
            complete,
        }
    }

    /// Writes to benches/results/<file>.json instead of <scenario>.json.
    pub fn file(mut self, file: String) -> Results {
        self.file = file;
        self
    }

    /// Adds `key: value` to every row recorded after this.
    pub fn tag(&mut self, key: &str, value: Value) {
        self.tags.insert(key.to_owned(), value);
    }

    pub fn row(&mut self, mut row: Value) {
        if let Value::Object(o) = &mut row {
            for (k, v) in &self.tags {
                o.insert(k.clone(), v.clone());
            }
        }
        println!("{row}");
        self.rows.push(row);
    }

    pub fn summary(&mut self, line: Value) {
        println!("{line}");
        self.summary.push(line);
    }

    pub fn save(self) {
        if cfg!(debug_assertions) || !self.complete {
            println!(
                "(partial or debug run: benches/results/{}.json not written)",
                self.file
            );
            return;
        }
        let doc = json!({
            "scenario": self.scenario,
            "date": today(),
            "machine": machine(),
            "versions": versions(),
            "rows": self.rows,
            "summary": self.summary,
        });
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results");
        std::fs::create_dir_all(dir).unwrap();
        let path = format!("{dir}/{}.json", self.file);
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
        println!("wrote {path}");
    }
}

pub fn today() -> String {
    sh("date -u +%Y-%m-%d")
}

fn machine() -> Value {
    json!({
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        // Not available_parallelism(): this process is pinned to one core.
        "cores": sh("nproc --all"),
        // The CPUs the bench could use, read before it pinned itself.
        "usable_cpus": crate::servers::usable_cpus().len(),
        "memory": sh("grep MemTotal /proc/meminfo | awk '{print $2\" kB\"}'"),
        "kernel": sh("uname -r"),
    })
}

fn versions() -> Value {
    json!({
        "switchboard": env!("CARGO_PKG_VERSION"),
        "rustc": sh("rustc --version"),
        "node": sh("node --version"),
        "socket.io": sh("node -p \"require('./benches/node-reference/node_modules/socket.io/package.json').version\""),
    })
}

/// Prints and records each server's figure over switchboard's.
pub fn ratio_line(results: &mut Results, key: &str, at: f64, what: &str, figures: &[(Kind, f64)]) {
    let Some(&(_, sb)) = figures.iter().find(|(k, _)| *k == Kind::Switchboard) else {
        return;
    };
    for &(k, v) in figures {
        if k != Kind::Switchboard && v.is_finite() && sb.is_finite() && sb != 0.0 {
            results.summary(json!({
                key: at, "figure": what, "switchboard": round2(sb), k.name(): round2(v),
                "ratio": round2(sb / v),
                "ratio_of": format!("switchboard / {}", k.name()),
            }));
        }
    }
}

/// Two decimals, for the JSON and the tables.
pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}
