//! Slow and idle clients against the real binary: a slowloris flood past the
//! connection cap is cut off at the head timeout while `/health` keeps
//! answering, idle keep-alive connections close, and SIGTERM stops the server
//! promptly with such connections open while a request in flight completes.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{http, start_with, try_http, Server};

const HEAD_TIMEOUT: Duration = Duration::from_secs(1);
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const CAP: usize = 20;
/// Room, on a loaded machine, between a deadline and the test noticing it.
const SLACK: Duration = Duration::from_secs(3);

fn start_small(dir: &std::path::Path) -> Server {
    start_with(
        dir,
        &[
            "--head-timeout",
            &HEAD_TIMEOUT.as_secs().to_string(),
            "--idle-timeout",
            &IDLE_TIMEOUT.as_secs().to_string(),
            "--max-connections",
            &CAP.to_string(),
        ],
    )
}

/// A client that starts a request head and then sends a header line now and
/// then, never finishing it.
struct Slowloris {
    stream: TcpStream,
    opened: Instant,
    lines: usize,
}

impl Slowloris {
    fn open(addr: SocketAddr) -> Self {
        let mut stream = TcpStream::connect(addr).unwrap();
        let opened = Instant::now();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        stream.set_nonblocking(true).unwrap();
        Slowloris {
            stream,
            opened,
            lines: 0,
        }
    }

    fn trickle(&mut self) {
        self.lines += 1;
        // A write to a connection the server has just dropped fails; the
        // next look at it sees it closed.
        let _ = write!(self.stream, "X-Trickle-{}: {}\r\n", self.lines, self.lines);
    }

    /// Whether the server has closed the connection, without waiting.
    fn closed(&mut self) -> bool {
        let mut buf = [0u8; 256];
        match self.stream.read(&mut buf) {
            Ok(0) => true,
            Ok(n) => panic!(
                "the server answered a partial head: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(_) => true,
        }
    }
}

#[test]
fn a_slowloris_flood_past_the_cap_is_cut_off_while_health_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_small(dir.path());
    let attackers = CAP + CAP / 2;
    let mut flood: Vec<Slowloris> = (0..attackers)
        .map(|_| Slowloris::open(server.addr))
        .collect();
    // How long each slow client stayed connected.
    let mut held = Vec::new();
    let mut health_checks = 0;

    // Keep the flood at full strength, reconnecting whoever is cut off,
    // well past the head timeout.
    let flooding = Instant::now();
    for _ in 0..40 {
        if flooding.elapsed() > 3 * HEAD_TIMEOUT {
            break;
        }
        for attacker in &mut flood {
            if attacker.closed() {
                held.push(attacker.opened.elapsed());
                *attacker = Slowloris::open(server.addr);
            } else {
                attacker.trickle();
            }
        }
        let (status, body) = try_http(server.addr, "GET", "/health", None, None)
            .unwrap_or_else(|e| panic!("/health during the flood: {e}"));
        assert_eq!(status, 200, "{body}");
        health_checks += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(health_checks >= 5, "only {health_checks} health checks");

    // The last wave is cut off too, trickling or not.
    let deadline = Instant::now() + HEAD_TIMEOUT + SLACK;
    for mut attacker in flood {
        while !attacker.closed() {
            assert!(
                Instant::now() < deadline,
                "a slow client still connected after {:?}",
                attacker.opened.elapsed()
            );
            attacker.trickle();
            std::thread::sleep(Duration::from_millis(50));
        }
        held.push(attacker.opened.elapsed());
    }
    assert!(held.len() > attackers, "the flood was never cut off");
    let longest = held.iter().max().unwrap();
    assert!(
        *longest <= HEAD_TIMEOUT + SLACK,
        "a slow client held a connection for {longest:?}"
    );
    let (status, _) = http(server.addr, "GET", "/health", None, None);
    assert_eq!(status, 200);
}

/// Send a keep-alive `GET /health` and read its whole answer.
fn keep_alive_health(stream: &mut TcpStream) {
    write!(stream, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..100 {
        let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no content-length in {head:?}"));
            if body.len() >= length {
                assert!(head.starts_with("http/1.1 200"), "{head}");
                assert!(!head.contains("connection: close"), "{head}");
                return;
            }
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed mid-answer");
        raw.extend_from_slice(&buf[..n]);
    }
    panic!("no complete answer");
}

/// Wait, at most `within`, for the server to close `stream`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn an_idle_keep_alive_connection_closes_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_small(dir.path());
    let mut stream = TcpStream::connect(server.addr).unwrap();
    keep_alive_health(&mut stream);
    let answered = Instant::now();
    // Still usable in the meantime, and then idle again from its answer.
    std::thread::sleep(IDLE_TIMEOUT / 2);
    keep_alive_health(&mut stream);
    let answered_again = Instant::now();
    assert!(closed_within(&mut stream, IDLE_TIMEOUT + SLACK));
    assert!(
        answered_again.elapsed() >= IDLE_TIMEOUT - Duration::from_millis(500),
        "closed {:?} after the last answer, before the idle timeout",
        answered_again.elapsed()
    );
    assert!(answered.elapsed() >= IDLE_TIMEOUT);
}

#[test]
fn sigterm_stops_promptly_with_idle_and_half_open_connections_and_finishes_a_request() {
    let shutdown_timeout = Duration::from_secs(5);
    let dir = tempfile::tempdir().unwrap();
    // Timeouts long enough that only the shutdown closes anything.
    let mut server = start_with(
        dir.path(),
        &[
            "--head-timeout",
            "60",
            "--idle-timeout",
            "60",
            "--shutdown-timeout",
            &shutdown_timeout.as_secs().to_string(),
        ],
    );
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr).unwrap();
            keep_alive_health(&mut stream);
            stream
        })
        .collect();
    let mut half_open: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr).unwrap();
            write!(stream, "GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
            stream
        })
        .collect();
    // In flight at SIGTERM: the handler has the head and waits for the body.
    let body = json!({"username": "alice", "password": "alice-password"}).to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut in_flight = TcpStream::connect(server.addr).unwrap();
    write!(
        in_flight,
        "POST /auth/setup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{first}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let signalled = Instant::now();
    let pid = server.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    for stream in idle.iter_mut().chain(half_open.iter_mut()) {
        let left = (signalled + shutdown_timeout / 2).saturating_duration_since(Instant::now());
        assert!(
            closed_within(stream, left),
            "a waiting connection is still open {:?} after SIGTERM",
            signalled.elapsed()
        );
    }

    in_flight.write_all(rest.as_bytes()).unwrap();
    in_flight
        .set_read_timeout(Some(shutdown_timeout + SLACK))
        .unwrap();
    let mut answer = Vec::new();
    in_flight.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");

    let exited = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < shutdown_timeout + SLACK,
            "still running {:?} after SIGTERM",
            signalled.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exited.success(), "{exited}");
    drop(server);

    // The request's effect was flushed to the store before the exit.
    let server = crate::helpers::start(dir.path());
    let (status, body) = http(
        server.addr,
        "POST",
        "/auth/login",
        None,
        Some(&json!({"username": "alice", "password": "alice-password"})),
    );
    assert_eq!(status, 200, "{body}");
}
