//! The load generator: one program for every scenario of docs/performance.md,
//! run against switchboard, the Node.js socket.io 4.8 reference and the
//! transport floor, alternately, in one run.
//!
//!   cargo bench --bench loadgen -- <scenario> [--servers switchboard,node,floor] [--quick]
//!
//! Scenarios: idle, fanout, ack, connect, chat, scale, scaleup, instructions,
//! recovery, hooks, webhooks, all; and plain (ack, fanout and idle at reduced
//! sizes with plain WebSocket clients: switchboard, plain, seed, node). Each prints one JSON line per measurement and a ratio line, and writes
//! benches/results/<scenario>.json when it ran in full (all its servers,
//! default sizes, release build). The generator is a current-thread runtime
//! pinned to CPU 1; servers are pinned to CPU 0. `fanout` and `scaleup`
//! spread their receivers over generator processes (`--generators N`, by
//! default one per core the server does not have, at most 8).
//!
//! Server kinds for `--servers`: switchboard, node, floor, and for idle,
//! fanout, ack and plain also `plain` (switchboard with its clients on
//! `/ws`, docs/protocol.md §19) and `seed` (benches/seed-ws/server.js).
//!
//! `loadgen hold <addr> <n> <secs> [plain|seed|browser] [steady]` only holds
//! n idle connections to a server started by hand (for profiling it, e.g.
//! under heaptrack).

mod ack;
#[path = "../common/mod.rs"]
mod common;
mod conn;
mod connect;
mod fanout;
mod floor;
mod idle;
mod instructions;
mod recovery;
mod report;
mod scale;
mod scaleup;
mod servers;

use std::time::Duration;

use report::Results;
use serde_json::json;
use servers::Kind;

const USAGE: &str = "usage: loadgen <idle|fanout|ack|connect|chat|scale|scaleup|instructions|recovery|hooks|webhooks|plain|all> [--servers a,b] [--sizes n,n] [--generators n] [--quick]";

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    match args.first().map(String::as_str) {
        Some("floor-server") => return floor::main(),
        Some("scale-worker") => return scale::worker(&args[1..]),
        Some("fanout-worker") => return fanout::worker(&args[1..]),
        Some("hold") => return idle::hold_main(&args[1..]),
        _ => {}
    }
    let Some(scenario) = args.first().cloned() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let quick = args.iter().any(|a| a == "--quick");
    let servers_arg = args
        .iter()
        .position(|a| a == "--servers")
        .and_then(|i| args.get(i + 1).cloned());
    let all_kinds = if scenario == "plain" {
        vec![Kind::Switchboard, Kind::Plain, Kind::Seed, Kind::Node]
    } else {
        vec![Kind::Switchboard, Kind::Node, Kind::Floor]
    };
    let kinds: Vec<Kind> = match &servers_arg {
        Some(list) => list
            .split(',')
            .map(|s| Kind::parse(s).unwrap_or_else(|| panic!("unknown server {s}")))
            .collect(),
        None => all_kinds,
    };
    if !["idle", "fanout", "ack", "plain"].contains(&scenario.as_str())
        && kinds.iter().any(|k| matches!(k, Kind::Plain | Kind::Seed))
    {
        eprintln!("plain and seed clients are in idle, fanout, ack and plain only");
        std::process::exit(2);
    }
    let sizes_arg: Option<Vec<usize>> = args
        .iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map(|l| {
            l.split(',')
                .map(|n| n.parse().expect("--sizes n,n"))
                .collect()
        });
    let generators: Option<usize> = args
        .iter()
        .position(|a| a == "--generators")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().expect("--generators n"));
    let complete = servers_arg.is_none() && sizes_arg.is_none() && generators.is_none() && !quick;
    // Before pinning: afterwards this process sees one CPU.
    let cpus = servers::usable_cpus();
    eprintln!("usable cpus: {cpus:?}");
    servers::pin_self();
    let scenarios: Vec<&str> = if scenario == "all" {
        vec![
            "idle",
            "fanout",
            "ack",
            "connect",
            "chat",
            "scale",
            "scaleup",
            "instructions",
            "recovery",
            "hooks",
            "webhooks",
        ]
    } else {
        vec![scenario.as_str()]
    };
    for s in scenarios {
        println!("\n== {s}");
        let sizes = sizes_arg.clone();
        block_on_local(run(s, &kinds, quick, sizes, generators, complete));
    }
}

/// Runs `fut` on a new current-thread runtime with a `LocalSet` (the
/// generator's tasks are `!Send`): the parent's scenarios and every worker
/// process.
pub fn block_on_local<F: std::future::Future>(fut: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, fut)
}

async fn run(
    scenario: &str,
    kinds: &[Kind],
    quick: bool,
    sizes: Option<Vec<usize>>,
    generators: Option<usize>,
    complete: bool,
) {
    let step = Duration::from_secs(if quick { 3 } else { 8 });
    match scenario {
        "idle" => {
            let mut r = Results::new("idle", complete);
            let opts = idle::Opts {
                sizes: sizes.unwrap_or(if quick {
                    vec![1000]
                } else {
                    vec![1000, 10_000]
                }),
                settle: Duration::from_secs(if quick { 5 } else { 30 }),
            };
            idle::run(kinds, &opts, &mut r).await;
            r.save();
        }
        "ack" => {
            let mut r = Results::new("ack", complete);
            let opts = ack::Opts {
                connections: if quick { 1000 } else { 10_000 },
                // 2.5k apart up to 30k: the highest passing step is the figure,
                // so the steps bound how exact the ratio can be.
                rates: [
                    1.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0, 22.5, 25.0, 27.5, 30.0, 35.0,
                    40.0, 50.0, 60.0,
                ]
                .map(|k| k * 1000.0)
                .to_vec(),
                step,
                p99_limit_ms: 10.0,
            };
            ack::run(kinds, &opts, &mut r).await;
            r.save();
        }
        "chat" => {
            let mut r = Results::new("chat", complete);
            let opts = ack::Opts {
                connections: 1000,
                rates: [
                    1.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0, 22.5, 25.0, 30.0, 40.0,
                ]
                .map(|k| k * 1000.0)
                .to_vec(),
                step,
                p99_limit_ms: 10.0,
            };
            ack::run_chat(&opts, &mut r).await;
            r.save();
        }
        "fanout" => {
            let mut r = Results::new("fanout", complete);
            let opts = fanout::Opts {
                rooms: if quick {
                    vec![1000]
                } else {
                    vec![1000, 10_000]
                },
                deliveries: [
                    2.5, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 150.0, 200.0, 250.0, 300.0, 400.0,
                ]
                .map(|k| k * 1000.0)
                .to_vec(),
                step,
                sampled: 100,
                p99_limit_ms: vec![50.0, 250.0],
                generators,
            };
            fanout::run(kinds, &opts, &mut r).await;
            r.save();
        }
        "scaleup" => {
            // Figures from a bigger machine go to a file of their own.
            let n = servers::usable_cpus().len();
            let file = if n > 2 {
                format!("scaleup-{n}core")
            } else {
                "scaleup".to_owned()
            };
            let mut r = Results::new("scaleup", complete).file(file);
            let ack_rates: &[f64] = if quick {
                &[1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 60.0]
            } else {
                &[
                    1.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0, 22.5, 25.0, 27.5, 30.0, 35.0,
                    40.0, 50.0, 60.0, 80.0, 100.0, 120.0, 150.0, 200.0,
                ]
            };
            let deliveries: &[f64] = if quick {
                &[2.5, 10.0, 50.0, 100.0, 200.0, 400.0]
            } else {
                &[
                    2.5, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 150.0, 200.0, 250.0, 300.0, 400.0,
                    500.0, 600.0, 800.0, 1000.0, 1200.0, 1600.0,
                ]
            };
            let opts = scaleup::Opts {
                cores: sizes.unwrap_or_else(|| vec![1, 2, 4, 8]),
                ack: ack::Opts {
                    connections: if quick { 1000 } else { 10_000 },
                    rates: ack_rates.iter().map(|k| k * 1000.0).collect(),
                    step,
                    p99_limit_ms: 10.0,
                },
                fanout: fanout::Opts {
                    rooms: vec![1000],
                    deliveries: deliveries.iter().map(|k| k * 1000.0).collect(),
                    step,
                    sampled: 100,
                    p99_limit_ms: vec![50.0],
                    generators,
                },
            };
            scaleup::run(kinds, &opts, &mut r).await;
            r.save();
        }
        "connect" => {
            let mut r = Results::new("connect", complete);
            let opts = connect::Opts {
                concurrency: 32,
                duration: step,
            };
            connect::run(kinds, &opts, &mut r).await;
            r.save();
        }
        "scale" => {
            let mut r = Results::new("scale", complete);
            let opts = scale::Opts {
                nodes: if quick { 2 } else { 6 },
                connections: if quick { 4000 } else { 100_000 },
                broadcasts: 5,
                sampled_per_node: 200,
            };
            scale::run(&opts, &mut r).await;
            r.save();
        }
        "instructions" => {
            let mut r = Results::new("instructions", complete);
            let opts = instructions::Opts {
                connections: 100,
                warmup: 2_000,
                acks: if quick { 5_000 } else { 20_000 },
            };
            instructions::run(kinds, &opts, &mut r).await;
            r.save();
        }
        "hooks" => {
            let mut r = Results::new("hooks", complete);
            let opts = ack::Opts {
                connections: 1000,
                rates: [1.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 20.0]
                    .map(|k| k * 1000.0)
                    .to_vec(),
                step,
                p99_limit_ms: 10.0,
            };
            ack::run_hooks(&opts, &mut r).await;
            r.save();
        }
        "webhooks" => {
            let mut r = Results::new("webhooks", complete);
            let opts = ack::Opts {
                connections: 1000,
                rates: [0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 20.0]
                    .map(|k| k * 1000.0)
                    .to_vec(),
                step,
                p99_limit_ms: 10.0,
            };
            ack::run_webhooks(&opts, &mut r).await;
            r.save();
        }
        "plain" => {
            // Plain WebSocket clients beside Socket.IO ones, at sizes a
            // 2-core machine runs in about ten minutes.
            let mut r = Results::new("plain", complete);
            r.tag("part", json!("ack"));
            let opts = ack::Opts {
                connections: 1000,
                rates: [
                    1.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 50.0,
                ]
                .map(|k| k * 1000.0)
                .to_vec(),
                step,
                p99_limit_ms: 10.0,
            };
            ack::run(kinds, &opts, &mut r).await;
            r.tag("part", json!("fanout"));
            let opts = fanout::Opts {
                rooms: vec![1000],
                deliveries: [10.0, 25.0, 50.0, 100.0, 150.0, 200.0]
                    .map(|k| k * 1000.0)
                    .to_vec(),
                step,
                sampled: 100,
                p99_limit_ms: vec![50.0],
                generators,
            };
            fanout::run(kinds, &opts, &mut r).await;
            r.tag("part", json!("idle"));
            let opts = idle::Opts {
                sizes: sizes.unwrap_or(if quick { vec![1000] } else { vec![1000, 5000] }),
                settle: Duration::from_secs(if quick { 5 } else { 30 }),
            };
            idle::run(kinds, &opts, &mut r).await;
            r.save();
        }
        "recovery" => {
            let mut r = Results::new("recovery", complete);
            let opts = recovery::Opts {
                clients: sizes
                    .as_ref()
                    .and_then(|s| s.first().copied())
                    .unwrap_or(if quick { 1000 } else { 10_000 }),
                per_room: 100,
                missed: if quick { vec![10] } else { vec![10, 100] },
                flow_per_room_sec: 1.0,
            };
            recovery::run(kinds, &opts, &mut r).await;
            r.save();
        }
        other => {
            eprintln!("unknown scenario {other}\n{USAGE}");
            std::process::exit(2);
        }
    }
}
