//! `connect`: closed-loop handshakes with a JWT, `concurrency` at a time for
//! a fixed time, over websocket only and over long-polling then upgrade (the
//! browser's default). Each handshake is a new TCP connection, closed with a
//! reset so that the run does not run out of ports.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, Error};
use crate::report::{GENERATOR_CPU_LIMIT, Meter, Results, hist, ms, ratio_line, round2};
use crate::servers::{Kind, Server};

pub struct Opts {
    pub concurrency: usize,
    pub duration: Duration,
}

const TOKENS: usize = 1000;

/// Long-polling handshake, CONNECT over polling, then the upgrade probe.
async fn polling(addr: std::net::SocketAddr, token: &str) -> Result<(), Error> {
    let mut s = conn::tcp(addr, None, true).await?;
    let (st, open) =
        conn::http(&mut s, "GET", "/socket.io/?EIO=4&transport=polling", "", "").await?;
    if st != 200 || !open.starts_with('0') {
        return Err(format!("open: {st} {open}").into());
    }
    let sid_at = open.find("\"sid\":\"").ok_or("no sid")? + 7;
    let sid = &open[sid_at..sid_at + open[sid_at..].find('"').ok_or("bad sid")?];
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let ct = "Content-Type: text/plain;charset=UTF-8\r\n";
    let (st, _) = conn::http(
        &mut s,
        "POST",
        &path,
        ct,
        &format!("40{{\"token\":\"{token}\"}}"),
    )
    .await?;
    if st != 200 {
        return Err(format!("post: {st}").into());
    }
    let (st, body) = conn::http(&mut s, "GET", &path, "", "").await?;
    // A payload may batch packets (a ping first), separated by 0x1e.
    if st != 200 || !body.split('\u{1e}').any(|p| p.starts_with("40")) {
        return Err(format!("connect: {st} {body}").into());
    }
    let tcp = conn::tcp(addr, None, true).await?;
    let mut ws = conn::websocket(tcp, addr, &format!("&sid={sid}")).await?;
    ws.send(Message::text("2probe")).await?;
    conn::expect(&mut ws, |t| t == "3probe").await?;
    ws.send(Message::text("5")).await?;
    Ok(())
}

async fn websocket(addr: std::net::SocketAddr, token: &str) -> Result<(), Error> {
    conn::connect(addr, None, token, true).await.map(drop)
}

pub async fn run(kinds: &[Kind], opts: &Opts, results: &mut Results) {
    let tokens: Rc<Vec<String>> =
        Rc::new((0..TOKENS).map(|i| conn::token(&format!("c{i}"))).collect());
    for transport in ["websocket", "polling"] {
        let mut rates = Vec::new();
        for &kind in kinds {
            if kind == Kind::Floor {
                continue; // the floor has no JWT and no polling
            }
            let server = Server::start(kind, &["--database-url", "memory"]);
            let addr = server.addr;
            let done = Rc::new(Cell::new(0u64));
            let errors = Rc::new(Cell::new(0u64));
            let first_error = Rc::new(RefCell::new(None::<String>));
            let h = Rc::new(RefCell::new(hist()));
            let meter = Meter::start(&server);
            let end = Instant::now() + opts.duration;
            let concurrency = opts.concurrency;
            let workers: Vec<_> = (0..opts.concurrency)
                .map(|w| {
                    let (done, errors, h, tokens, first_error) = (
                        done.clone(),
                        errors.clone(),
                        h.clone(),
                        tokens.clone(),
                        first_error.clone(),
                    );
                    tokio::task::spawn_local(async move {
                        let mut k = w;
                        while Instant::now() < end {
                            let t0 = Instant::now();
                            let token = &tokens[k % TOKENS];
                            let r = if transport == "websocket" {
                                websocket(addr, token).await
                            } else {
                                polling(addr, token).await
                            };
                            match r {
                                Ok(()) => {
                                    done.set(done.get() + 1);
                                    let _ = h
                                        .borrow_mut()
                                        .record((t0.elapsed().as_micros() as u64).max(1));
                                }
                                Err(e) => {
                                    errors.set(errors.get() + 1);
                                    first_error.borrow_mut().get_or_insert(e.to_string());
                                }
                            }
                            k += concurrency;
                        }
                    })
                })
                .collect();
            for w in workers {
                let _ = w.await;
            }
            let m = meter.stop(&server);
            let n = done.get();
            let rate = n as f64 / m.secs;
            let h = h.borrow();
            results.row(json!({
                "scenario": "connect", "server": kind.name(), "transport": transport,
                "concurrency": opts.concurrency, "handshakes": n, "errors": errors.get(),
                "first_error": *first_error.borrow(),
                "handshakes_per_sec": rate.round(),
                "p50_ms": round2(ms(&h, 0.5)), "p99_ms": round2(ms(&h, 0.99)),
                "server_cpu_us_per_handshake": round2(m.server_cpu_secs * 1e6 / n.max(1) as f64),
                "generator_cpu": round2(m.generator_cpu), "valid": m.generator_cpu <= GENERATOR_CPU_LIMIT,
            }));
            rates.push((kind, if errors.get() == 0 { rate } else { f64::NAN }));
        }
        let at = if transport == "websocket" { 0.0 } else { 1.0 };
        ratio_line(results, "polling", at, "handshakes_per_sec", &rates);
    }
}
