//! `scaleup`: switchboard given 1, 2, 4, 8 cores (taskset; only the counts
//! that leave at least one core to the generator), each running the ack
//! ladder (`ack`'s, 10k connections) and the fanout ladder (a room of 1k,
//! receivers over the generator cores left); Node's reference on one core
//! alongside. One Node.js process uses one core: more would take a cluster
//! of processes and an adapter between them, where switchboard is one
//! process using the cores it is given.

use serde_json::json;

use crate::report::{Results, round2};
use crate::servers::{Kind, Placement, Server, pin_self, pin_self_to, usable_cpus};
use crate::{ack, fanout};

pub struct Opts {
    /// Server core counts to try (those that fit this machine are run).
    pub cores: Vec<usize>,
    pub ack: ack::Opts,
    pub fanout: fanout::Opts,
}

pub async fn run(kinds: &[Kind], opts: &Opts, results: &mut Results) {
    let n = usable_cpus().len();
    let fits: Vec<usize> = opts
        .cores
        .iter()
        .copied()
        .filter(|&c| c >= 1 && c < n)
        .collect();
    if fits.is_empty() {
        eprintln!(
            "scaleup: {n} usable cpus leave no core counts of {:?} plus a generator core",
            opts.cores
        );
    }
    let m = opts.fanout.rooms[0];
    let limit_ms = opts.fanout.p99_limit_ms[0];
    // (kind, cores, highest ack rate, highest deliveries/s)
    let mut figures: Vec<(Kind, usize, f64, f64)> = Vec::new();
    for &kind in kinds {
        let counts = match kind {
            Kind::Switchboard => fits.clone(),
            Kind::Node => fits.first().map(|_| vec![1]).unwrap_or_default(),
            Kind::Floor | Kind::Plain | Kind::Seed => continue,
        };
        for c in counts {
            let place = Placement::new(c, opts.fanout.generators);
            eprintln!(
                "scaleup: {} on cpus {}, ack generator on cpu {}, {} fanout workers on cpus {:?}",
                kind.name(),
                place.server,
                place.parent,
                place.workers.len(),
                place.workers
            );
            results.tag("server_cores", json!(c));
            results.tag("server_cpus", json!(place.server));
            results.tag("ladder", json!("ack"));
            // The ack generator is this one process: it takes the first core
            // the server does not have.
            pin_self_to(place.parent);
            let acks = {
                let server =
                    Server::start_on(kind, &["--database-url", "memory"], Some(&place.server));
                ack::ladder(&server, kind.name(), &opts.ack, results, "scaleup").await
            };
            results.tag("ladder", json!("fanout"));
            let deliveries = {
                let server =
                    Server::start_on(kind, &["--database-url", "memory"], Some(&place.server));
                fanout::ladder(
                    &server,
                    m,
                    limit_ms,
                    &opts.fanout,
                    &place,
                    "scaleup",
                    results,
                )
                .await
                .0
            };
            results.summary(json!({
                "server": kind.name(), "server_cores": c,
                "highest_ack_rate_p99_under_ms": opts.ack.p99_limit_ms, "highest_ack_rate": acks,
                "highest_deliveries_per_sec_p99_under_ms": limit_ms, "members": m,
                "highest_deliveries_per_sec": deliveries.round(),
            }));
            figures.push((kind, c, acks, deliveries));
        }
    }
    pin_self();
    // Each switchboard core count against Node on its one core.
    let Some(&(_, _, node_acks, node_del)) = figures.iter().find(|f| f.0 == Kind::Node) else {
        return;
    };
    for &(kind, c, acks, del) in &figures {
        if kind != Kind::Switchboard {
            continue;
        }
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| round2(a / b));
        results.summary(json!({
            "server_cores": c, "ratio_of": format!("switchboard on {c} cores / node on 1 core"),
            "ack_rate_ratio": ratio(acks, node_acks),
            "deliveries_ratio": ratio(del, node_del),
        }));
    }
}
