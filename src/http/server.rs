//! The HTTP/1.1 server around the router: slow and idle clients cannot hold
//! it. Each request head has a deadline, idle keep-alive connections close,
//! open connections are capped, and a graceful shutdown ends in bounded time.
//!
//! Every connection is in one of a few phases (idle, receiving a head, busy
//! with requests, flushing its last answer). An IO wrapper and a service
//! wrapper move it between them; the connection's own task is its watchdog
//! and drops it when the phase's deadline passes or when it is asked to close
//! with nothing in flight. Dropping is safe then: no handler is running.
//!
//! A phase change never brings a deadline sooner than the shorter timeout
//! from when it happens, so the watchdog, looking again at least that often,
//! catches every deadline without the phase changes having to wake it: the
//! request path only takes an uncontended lock to record them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use axum::Router;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::util::Oneshot;
use tower::ServiceExt;

use crate::Config;

/// Bounds on the connections of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time for a request head to arrive, from its first byte.
    pub head_timeout: Duration,
    /// Time a connection may wait for its next request (or for the client to
    /// take its last answer).
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Time requests in flight get to finish once shutdown begins.
    pub shutdown_timeout: Duration,
}

impl From<&Config> for ConnectionLimits {
    fn from(config: &Config) -> Self {
        Self {
            head_timeout: config.head_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: config.max_connections,
            shutdown_timeout: config.shutdown_timeout,
        }
    }
}

/// Serve `router` on `listener` until `shutdown` completes, then stop
/// accepting, close connections with nothing in flight, give requests in
/// flight `limits.shutdown_timeout` to finish, drop the rest and return.
///
/// Handlers find the peer address as `ConnectInfo<SocketAddr>` in the request
/// extensions, as with `into_make_service_with_connect_info`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let registry = Arc::new(Registry::default());
    let mut builder = http1::Builder::new();
    // hyper's header timeout also runs while a keep-alive connection waits for
    // its next request, which would cap the idle time by the head time; the
    // watchdog keeps the two clocks apart instead.
    builder.header_read_timeout(None);
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    'accept: loop {
        tokio::select! {
            () = &mut shutdown => break,
            // Reap finished tasks; a panic has already been reported by the hook.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(registered) = registry.admit(limits.max_connections, Instant::now()) else {
                        tracing::debug!(%peer, "every connection is serving a request; refused");
                        continue;
                    };
                    connections.spawn(serve_connection(
                        stream,
                        peer,
                        router.clone(),
                        builder.clone(),
                        limits,
                        registered,
                    ));
                }
                // The peer gave up before we accepted: nothing to do.
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // Out of file descriptors or memory: other connections
                    // will close, so wait rather than stop serving.
                    tracing::warn!(error = %e, "accepting a connection failed; retrying in 1 s");
                    tokio::select! {
                        () = &mut shutdown => break 'accept,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    registry.close_all();
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "requests still in flight at the shutdown bound; dropping them"
        );
        connections.shutdown().await;
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One connection's task: serves it and is its watchdog.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    builder: http1::Builder,
    limits: ConnectionLimits,
    registered: Registered,
) {
    let shared = registered.shared.clone();
    let io = TokioIo::new(WatchedIo {
        stream,
        shared: shared.clone(),
    });
    let service = TrackedService {
        router,
        peer,
        shared: shared.clone(),
    };
    let mut http = pin!(builder.serve_connection(io, service));
    // The watchdog looks again at least this often, which catches every
    // deadline a phase change sets (see the module doc); capped so that huge
    // timeouts still add to an instant.
    let period = limits
        .head_timeout
        .min(limits.idle_timeout)
        .clamp(Duration::from_millis(1), Duration::from_secs(24 * 60 * 60));
    let mut timer = pin!(tokio::time::sleep(period));
    let mut draining = false;
    loop {
        let now = Instant::now();
        let (verdict, closing) = {
            let state = shared.state();
            (state.verdict(now, &limits), state.closing)
        };
        let deadline = match verdict {
            // Dropping the connection closes the socket.
            Verdict::Close => return,
            Verdict::Wait(deadline) => deadline,
        };
        if closing && !draining {
            // Something is in flight: hyper finishes it, answers with
            // `Connection: close` and closes.
            http.as_mut().graceful_shutdown();
            draining = true;
        }
        let next = now + period;
        timer
            .as_mut()
            .reset(deadline.map_or(next, |deadline| deadline.min(next)));
        tokio::select! {
            result = http.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = timer.as_mut() => {}
            () = shared.wake.notified() => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of a request.
    Idle,
    /// Part of a request head has arrived.
    ReceivingHead,
    /// This many requests are with the router or still sending their body.
    Busy(usize),
    /// The last answer is complete but not yet written to the socket.
    Flushing,
}

#[derive(Debug, Clone, Copy)]
struct State {
    phase: Phase,
    /// When the phase began.
    since: Instant,
    /// Close as soon as nothing is in flight (evicted, or shutting down).
    closing: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Drop the connection: nothing is in flight and it has had its time.
    Close,
    /// Keep serving; look again at this deadline, if any, or when woken.
    Wait(Option<Instant>),
}

impl State {
    fn new(now: Instant) -> Self {
        Self {
            phase: Phase::Idle,
            since: now,
            closing: false,
        }
    }

    fn bytes_read(&mut self, now: Instant) {
        // Only the first bytes of a head start its clock: trickling more
        // cannot extend it.
        if self.phase == Phase::Idle {
            self.phase = Phase::ReceivingHead;
            self.since = now;
        }
    }

    fn request_started(&mut self, now: Instant) {
        let in_flight = match self.phase {
            Phase::Busy(n) => n,
            _ => 0,
        };
        self.phase = Phase::Busy(in_flight + 1);
        self.since = now;
    }

    fn request_finished(&mut self, now: Instant) {
        match self.phase {
            Phase::Busy(n) if n > 1 => self.phase = Phase::Busy(n - 1),
            Phase::Busy(_) => {
                self.phase = Phase::Flushing;
                self.since = now;
            }
            _ => {}
        }
    }

    fn flushed(&mut self, now: Instant) {
        if self.phase == Phase::Flushing {
            self.phase = Phase::Idle;
            self.since = now;
        }
    }

    fn verdict(&self, now: Instant, limits: &ConnectionLimits) -> Verdict {
        let timeout = match self.phase {
            // The router's request timeout bounds a request, not this.
            Phase::Busy(_) => return Verdict::Wait(None),
            Phase::Idle | Phase::ReceivingHead if self.closing => return Verdict::Close,
            Phase::Idle | Phase::Flushing => limits.idle_timeout,
            Phase::ReceivingHead => limits.head_timeout,
        };
        // A timeout too large to add is no deadline at all.
        match self.since.checked_add(timeout) {
            Some(deadline) if now >= deadline => Verdict::Close,
            deadline => Verdict::Wait(deadline),
        }
    }

    /// Since when the connection could be closed to make room: nothing in
    /// flight and not already on its way out.
    fn evictable_since(&self) -> Option<Instant> {
        match self.phase {
            Phase::Idle | Phase::ReceivingHead if !self.closing => Some(self.since),
            _ => None,
        }
    }
}

/// What the accept loop, the IO wrapper, the service and the watchdog know
/// of one connection.
struct Shared {
    state: Mutex<State>,
    /// Wakes the watchdog when closing is asked.
    wake: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is plain data, valid whatever a panicking holder did.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) {
        self.state().closing = true;
        self.wake.notify_one();
    }
}

/// The open connections of one listener.
#[derive(Default)]
struct Registry {
    connections: Mutex<HashMap<u64, Arc<Shared>>>,
    next_id: AtomicU64,
}

impl Registry {
    fn connections(&self) -> MutexGuard<'_, HashMap<u64, Arc<Shared>>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Register a new connection, closing the one waiting longest with
    /// nothing in flight if the listener is at its cap; `None` if every
    /// connection is serving a request.
    fn admit(self: &Arc<Self>, max: usize, now: Instant) -> Option<Registered> {
        let mut connections = self.connections();
        if connections.len() >= max {
            // The victim leaves the map when its task ends, a moment later. If
            // it starts a request meanwhile, it closes once that is answered.
            let victim = oldest_evictable(
                connections
                    .iter()
                    .map(|(id, shared)| (*id, *shared.state())),
            )?;
            if let Some(shared) = connections.get(&victim) {
                shared.close();
                tracing::debug!("at the connection cap; closed the longest waiting one");
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(now)),
            wake: Notify::new(),
        });
        connections.insert(id, shared.clone());
        Some(Registered {
            registry: self.clone(),
            id,
            shared,
        })
    }

    fn close_all(&self) {
        for shared in self.connections().values() {
            shared.close();
        }
    }
}

fn oldest_evictable(states: impl Iterator<Item = (u64, State)>) -> Option<u64> {
    states
        .filter_map(|(id, state)| Some((state.evictable_since()?, id)))
        .min()
        .map(|(_, id)| id)
}

/// A connection's place in the registry, given up when its task ends
/// (normally or aborted at the shutdown bound).
struct Registered {
    registry: Arc<Registry>,
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.connections().remove(&self.id);
    }
}

/// The socket, reporting the first bytes of a request head and completed
/// flushes.
struct WatchedIo {
    stream: TcpStream,
    shared: Arc<Shared>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.shared.state().bytes_read(Instant::now());
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper flushes after writing out its buffer: once this succeeds, the
        // answer is with the kernel and dropping the connection loses nothing.
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        if let Poll::Ready(Ok(())) = polled {
            self.shared.state().flushed(Instant::now());
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The router, marking the connection busy from the moment a request is
/// handed over until hyper has taken the whole answer.
struct TrackedService {
    router: Router,
    peer: SocketAddr,
    shared: Arc<Shared>,
}

impl hyper::service::Service<Request<Incoming>> for TrackedService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = TrackedFuture;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        TrackedFuture {
            response: self.router.clone().oneshot(request),
            in_flight: Some(InFlight::start(self.shared.clone())),
        }
    }
}

/// The router's answer, handing the request's `InFlight` on to its body.
struct TrackedFuture {
    response: Oneshot<Router, Request<Incoming>>,
    in_flight: Option<InFlight>,
}

impl Future for TrackedFuture {
    type Output = Result<Response<TrackedBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let response = ready!(Pin::new(&mut this.response).poll(cx))?;
        // A long body (a backup) is still in flight: the request ends when
        // hyper drops the body, after its last byte.
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|body| TrackedBody {
            body,
            _in_flight: in_flight,
        })))
    }
}

/// An answer's body; the request stays in flight until hyper drops it.
struct TrackedBody {
    body: Body,
    _in_flight: Option<InFlight>,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// One request in flight on a connection, from the router's call until its
/// answer's body is dropped.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn start(shared: Arc<Shared>) -> Self {
        shared.state().request_started(Instant::now());
        Self(shared)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state().request_finished(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        head_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 2,
        shutdown_timeout: Duration::from_secs(10),
    };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn an_idle_connection_closes_after_the_idle_timeout() {
        let t0 = Instant::now();
        let state = State::new(t0);
        assert_eq!(
            state.verdict(t0 + secs(59), &LIMITS),
            Verdict::Wait(Some(t0 + secs(60)))
        );
        assert_eq!(state.verdict(t0 + secs(60), &LIMITS), Verdict::Close);
    }

    #[test]
    fn a_head_has_its_time_from_its_first_byte_however_it_trickles() {
        let t0 = Instant::now();
        let mut state = State::new(t0);
        state.bytes_read(t0 + secs(30));
        // More bytes do not restart the clock.
        state.bytes_read(t0 + secs(35));
        state.bytes_read(t0 + secs(39));
        assert_eq!(state.phase, Phase::ReceivingHead);
        assert_eq!(
            state.verdict(t0 + secs(39), &LIMITS),
            Verdict::Wait(Some(t0 + secs(40)))
        );
        assert_eq!(state.verdict(t0 + secs(40), &LIMITS), Verdict::Close);
    }

    #[test]
    fn a_busy_connection_has_no_deadline_and_is_idle_once_its_answer_is_flushed() {
        let t0 = Instant::now();
        let mut state = State::new(t0);
        state.bytes_read(t0);
        state.request_started(t0 + secs(1));
        // Bytes of the body or of a pipelined request change nothing.
        state.bytes_read(t0 + secs(2));
        assert_eq!(state.phase, Phase::Busy(1));
        assert_eq!(state.verdict(t0 + secs(1000), &LIMITS), Verdict::Wait(None));
        state.closing = true;
        assert_eq!(state.verdict(t0 + secs(1000), &LIMITS), Verdict::Wait(None));
        state.closing = false;

        state.request_finished(t0 + secs(1000));
        assert_eq!(state.phase, Phase::Flushing);
        // A client that never takes its answer is dropped like an idle one.
        assert_eq!(
            state.verdict(t0 + secs(1000), &LIMITS),
            Verdict::Wait(Some(t0 + secs(1060)))
        );
        state.flushed(t0 + secs(1001));
        assert_eq!(state.phase, Phase::Idle);
        assert_eq!(
            state.verdict(t0 + secs(1001), &LIMITS),
            Verdict::Wait(Some(t0 + secs(1061)))
        );
    }

    #[test]
    fn overlapping_requests_keep_the_connection_busy_until_the_last() {
        let t0 = Instant::now();
        let mut state = State::new(t0);
        state.request_started(t0);
        state.request_started(t0);
        state.request_finished(t0);
        assert_eq!(state.phase, Phase::Busy(1));
        state.request_finished(t0);
        assert_eq!(state.phase, Phase::Flushing);
        // A stray end does not underflow.
        state.request_finished(t0);
        assert_eq!(state.phase, Phase::Flushing);
    }

    #[test]
    fn closing_drops_idle_and_half_received_connections_at_once() {
        let t0 = Instant::now();
        let mut idle = State::new(t0);
        idle.closing = true;
        assert_eq!(idle.verdict(t0, &LIMITS), Verdict::Close);
        let mut head = State::new(t0);
        head.bytes_read(t0);
        head.closing = true;
        assert_eq!(head.verdict(t0, &LIMITS), Verdict::Close);
        // An answer being written is left to finish.
        let mut flushing = State::new(t0);
        flushing.request_started(t0);
        flushing.request_finished(t0);
        flushing.closing = true;
        assert!(matches!(
            flushing.verdict(t0, &LIMITS),
            Verdict::Wait(Some(_))
        ));
    }

    #[test]
    fn a_timeout_too_large_to_add_never_fires() {
        let t0 = Instant::now();
        let limits = ConnectionLimits {
            idle_timeout: Duration::MAX,
            ..LIMITS
        };
        assert_eq!(State::new(t0).verdict(t0, &limits), Verdict::Wait(None));
    }

    #[test]
    fn the_victim_is_the_connection_waiting_longest_with_nothing_in_flight() {
        let t0 = Instant::now();
        let at = |phase, since: u64, closing| State {
            phase,
            since: t0 + secs(since),
            closing,
        };
        let states = [
            (1, at(Phase::Busy(1), 0, false)),
            (2, at(Phase::Flushing, 1, false)),
            (3, at(Phase::Idle, 2, true)),
            (4, at(Phase::Idle, 5, false)),
            (5, at(Phase::ReceivingHead, 4, false)),
            (6, at(Phase::ReceivingHead, 9, false)),
        ];
        assert_eq!(oldest_evictable(states.into_iter()), Some(5));
        assert_eq!(oldest_evictable(states[..3].iter().copied()), None);
    }

    #[test]
    fn at_the_cap_the_registry_evicts_or_refuses() {
        let t0 = Instant::now();
        let registry = Arc::new(Registry::default());
        let a = registry.admit(2, t0).unwrap();
        let b = registry.admit(2, t0 + secs(1)).unwrap();
        b.shared.state().request_started(t0 + secs(1));
        // `a` waits longest with nothing in flight: it makes room.
        let c = registry.admit(2, t0 + secs(2)).unwrap();
        assert!(a.shared.state().closing);
        assert!(!b.shared.state().closing);
        drop(a);
        c.shared.state().request_started(t0 + secs(2));
        // Everyone is busy: the newcomer is refused.
        assert!(registry.admit(2, t0 + secs(3)).is_none());
        assert_eq!(registry.connections().len(), 2);
        drop((b, c));
        assert!(registry.connections().is_empty());
    }

    /// An in-process server whose `/wait` handler holds its request until
    /// the test releases it; `/peer` answers the client's address.
    struct TestServer {
        addr: SocketAddr,
        entered: Arc<Notify>,
        release: Arc<Notify>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        server: tokio::task::JoinHandle<()>,
    }

    async fn test_server(limits: ConnectionLimits) -> TestServer {
        use axum::routing::get;
        let entered = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let (in_handler, held) = (entered.clone(), release.clone());
        let router = Router::new()
            .route(
                "/wait",
                get(move || async move {
                    in_handler.notify_one();
                    held.notified().await;
                    "done"
                }),
            )
            .route("/big", get(|| async { vec![b'x'; BIG] }))
            .route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(serve(listener, router, limits, async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            entered,
            release,
            stop: Some(stop),
            server,
        }
    }

    const BOUND: Duration = Duration::from_secs(5);
    /// Far more than socket buffers hold.
    const BIG: usize = 16 << 20;

    /// One keep-alive response: its head and body (by Content-Length).
    async fn response(stream: &mut TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut raw = Vec::new();
        let mut chunk = [0u8; 1024];
        tokio::time::timeout(BOUND, async {
            loop {
                let text = String::from_utf8_lossy(&raw).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|n| n.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        return text;
                    }
                }
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed mid-response: {text:?}");
                raw.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("a response in time")
    }

    /// Whether the server closed the connection (rather than answering or
    /// keeping it open) within `within`.
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        use tokio::io::AsyncReadExt;
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(within, stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    async fn send(stream: &mut TcpStream, bytes: &str) {
        use tokio::io::AsyncWriteExt;
        stream.write_all(bytes.as_bytes()).await.unwrap();
    }

    #[tokio::test]
    async fn at_the_cap_busy_connections_stay_and_an_idle_one_makes_room() {
        let server = test_server(ConnectionLimits {
            max_connections: 1,
            ..LIMITS
        })
        .await;
        let mut busy = TcpStream::connect(server.addr).await.unwrap();
        send(&mut busy, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n").await;
        server.entered.notified().await;

        // Every connection is serving a request: the newcomer is closed.
        let mut refused = TcpStream::connect(server.addr).await.unwrap();
        assert!(closed_within(&mut refused, BOUND).await);

        server.release.notify_one();
        assert!(response(&mut busy).await.ends_with("done"));

        // Now idle, the first connection makes room for a newcomer, which
        // sees its own address as `ConnectInfo`.
        let mut newcomer = TcpStream::connect(server.addr).await.unwrap();
        assert!(closed_within(&mut busy, BOUND).await);
        send(&mut newcomer, "GET /peer HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let answer = response(&mut newcomer).await;
        let own = newcomer.local_addr().unwrap().to_string();
        assert!(answer.ends_with(&own), "{answer:?} is not from {own}");
    }

    #[tokio::test]
    async fn shutdown_closes_what_waits_lets_requests_finish_and_drops_the_rest_at_the_bound() {
        let shutdown_timeout = Duration::from_secs(2);
        let mut server = test_server(ConnectionLimits {
            shutdown_timeout,
            ..LIMITS
        })
        .await;
        let mut idle = TcpStream::connect(server.addr).await.unwrap();
        send(&mut idle, "GET /peer HTTP/1.1\r\nHost: x\r\n\r\n").await;
        response(&mut idle).await;
        let mut half = TcpStream::connect(server.addr).await.unwrap();
        send(&mut half, "GET /peer HTTP/1.1\r\nHost: x\r\n").await;
        let mut finishing = TcpStream::connect(server.addr).await.unwrap();
        send(&mut finishing, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n").await;
        server.entered.notified().await;
        let mut stuck = TcpStream::connect(server.addr).await.unwrap();
        send(&mut stuck, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n").await;
        server.entered.notified().await;

        let started = Instant::now();
        let _ = server.stop.take().unwrap().send(());
        // Closed while the stuck request still holds the server open.
        assert!(closed_within(&mut idle, shutdown_timeout).await);
        assert!(closed_within(&mut half, shutdown_timeout).await);
        assert!(started.elapsed() < shutdown_timeout);
        assert!(TcpStream::connect(server.addr).await.is_err());

        server.release.notify_one();
        let answer = response(&mut finishing).await;
        assert!(answer.contains("connection: close"), "{answer:?}");
        assert!(answer.ends_with("done"), "{answer:?}");

        tokio::time::timeout(shutdown_timeout + BOUND, &mut server.server)
            .await
            .expect("serve returns at the shutdown bound")
            .unwrap();
        assert!(started.elapsed() >= shutdown_timeout);
        assert!(closed_within(&mut stuck, BOUND).await);
    }

    #[tokio::test]
    async fn shutdown_lets_a_large_answer_the_client_reads_slowly_arrive_whole() {
        use tokio::io::AsyncReadExt;
        let mut server = test_server(LIMITS).await;
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        send(&mut client, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut start = [0u8; 1024];
        client.read_exact(&mut start).await.unwrap();
        // Let the server fill the socket and wait on the client.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = server.stop.take().unwrap().send(());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut rest = Vec::new();
        tokio::time::timeout(BOUND, client.read_to_end(&mut rest))
            .await
            .expect("the answer ends")
            .unwrap();
        let received = start.len() + rest.len();
        assert!(received > BIG, "{received} bytes of a {BIG}-byte body");
        tokio::time::timeout(BOUND, &mut server.server)
            .await
            .expect("serve returns")
            .unwrap();
    }
}
