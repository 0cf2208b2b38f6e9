//! A scripted HTTP file server over a real socket, for the tests of media fetching (pictures
//! that arrive, expired QQ links, hostile sources). Each path is scripted with a [`Route`]:
//! status, body bytes (optionally padded with zeros to any length without holding them in
//! memory), `Content-Type`, a delay before the headers, a stall after N body bytes, chunked
//! transfer without `Content-Length`, a lying `Content-Length`, a redirect, and pacing. Per
//! path it counts requests and the body bytes actually written to the socket.
//!
//! It speaks HTTP/1.1 by hand on a tokio listener (one request per connection, always
//! `Connection: close`) rather than through axum: a server framework refuses to send a body
//! that disagrees with its `Content-Length` and buffers hundreds of KiB between the handler
//! and the socket, and these tests need both the lies and an exact count of what was written.
//!
//! Counting what a client *read* from what the server *wrote*: the kernel's socket buffers
//! (and a loopback receive window that grows to megabytes) accept data that no client read.
//! The listener asks for a small send buffer, and a test asserting how little a client read
//! should [`Route::paced`] the body so the server cannot run far ahead of the client.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::PATIENCE;

/// The send buffer the listener asks for (the kernel doubles it), so bytes counted as written
/// are close to bytes that reached the client.
const SEND_BUFFER: u32 = 32 * 1024;

/// Body bytes written per write when a route is not paced.
const PIECE: usize = 16 * 1024;

/// Largest request head read.
const MAX_HEAD: usize = 64 * 1024;

/// What the server answers on one path.
#[derive(Debug, Clone)]
pub struct Route {
    /// HTTP status code.
    status: u16,
    /// The first bytes of the body.
    body: Vec<u8>,
    /// Total body length: `body`, then zeros up to it.
    len: u64,
    /// `Content-Type`, if any.
    content_type: Option<String>,
    /// Wait before writing the status line.
    delay: Duration,
    /// Stop writing (and hold the connection open) after this many body bytes.
    stall_after: Option<u64>,
    /// Chunked transfer encoding, no `Content-Length`.
    chunked: bool,
    /// `Content-Length` to announce instead of the true length.
    announced: Option<u64>,
    /// Bytes per write and pause after each write.
    pace: Option<(usize, Duration)>,
    /// Further headers.
    headers: Vec<(String, String)>,
}

impl Route {
    /// `200 OK` with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Route {
        Route::status(200, body)
    }

    /// An answer with any `status` and `body`.
    pub fn status(status: u16, body: impl Into<Vec<u8>>) -> Route {
        let body = body.into();
        Route {
            status,
            len: body.len() as u64,
            body,
            content_type: None,
            delay: Duration::ZERO,
            stall_after: None,
            chunked: false,
            announced: None,
            pace: None,
            headers: Vec::new(),
        }
    }

    /// `302 Found` to `location` (a path on this server or any URL), empty body.
    pub fn redirect(location: impl Into<String>) -> Route {
        Route::status(302, Vec::new()).header("location", location)
    }

    /// Sets `Content-Type`.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Route {
        self.content_type = Some(content_type.into());
        self
    }

    /// Pads the body with zero bytes up to `len` bytes in all (generated while writing, so a
    /// 30 MiB body costs no memory).
    pub fn padded_to(mut self, len: u64) -> Route {
        self.len = self.len.max(len);
        self
    }

    /// Waits `delay` before writing the status line (a slow source).
    pub fn delay(mut self, delay: Duration) -> Route {
        self.delay = delay;
        self
    }

    /// Writes the headers and `bytes` body bytes, then nothing more while holding the
    /// connection open until the client hangs up (a stalled source).
    pub fn stall_after(mut self, bytes: u64) -> Route {
        self.stall_after = Some(bytes);
        self
    }

    /// Sends the body chunked, without `Content-Length`.
    pub fn chunked(mut self) -> Route {
        self.chunked = true;
        self
    }

    /// Announces `Content-Length: length` whatever the body's true length (a lying source).
    pub fn announce_length(mut self, length: u64) -> Route {
        self.announced = Some(length);
        self
    }

    /// Writes the body `piece` bytes at a time with a pause of `every` after each write, so
    /// the bytes counted as written track what the client read.
    pub fn paced(mut self, piece: usize, every: Duration) -> Route {
        self.pace = Some((piece.max(1), every));
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Route {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The body bytes from `offset`, `count` of them.
    fn slice(&self, offset: u64, count: usize) -> Vec<u8> {
        let mut out = vec![0u8; count];
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        if start < self.body.len() {
            let end = self.body.len().min(start + count);
            out[..end - start].copy_from_slice(&self.body[start..end]);
        }
        out
    }
}

/// What one path saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests received.
    pub requests: u64,
    /// Body bytes written to sockets (chunk framing not counted).
    pub body_bytes: u64,
}

/// The server's shared state.
#[derive(Debug, Default)]
struct State {
    /// Scripted routes by path (without query).
    routes: Mutex<HashMap<String, Route>>,
    /// Counters by path, also for unscripted paths.
    counts: Mutex<HashMap<String, Counts>>,
}

impl State {
    /// Applies `change` to the counters of `path`.
    fn count(&self, path: &str, change: impl FnOnce(&mut Counts)) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        change(counts.entry(path.to_owned()).or_default());
    }
}

/// A PNG of `len` bytes (at least its header): the PNG signature and an IHDR chunk, then
/// bytes that differ from place to place (so a shifted or repeated chunk would show).
pub fn png(len: usize) -> Vec<u8> {
    let mut bytes =
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\x00\x00\x01\x00\x08\x06\x00\x00\x00"
            .to_vec();
    let mut state = 0x9e37_79b9_u32;
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        bytes.push(state as u8);
    }
    bytes
}

/// Lowercase hex SHA-256 of `bytes`: how the cache names a picture.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A 1×1 GIF: what a sticker's bytes look like.
pub const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";

/// A running file server; stops (and drops every open connection) when dropped.
pub struct FileServer {
    /// Where it listens.
    addr: SocketAddr,
    /// Routes and counters.
    state: Arc<State>,
    /// Ends the accept loop and every connection.
    stop: CancellationToken,
    /// The accept loop.
    task: JoinHandle<()>,
}

impl FileServer {
    /// Starts a server on 127.0.0.1 and a free port. Unscripted paths answer 404.
    pub async fn start() -> FileServer {
        FileServer::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .await
            .expect("bind the file server on 127.0.0.1")
    }

    /// Starts a server on `ip` (`::1` for a test of IPv6 loopback) and a free port.
    ///
    /// # Errors
    /// When the address cannot be bound (no IPv6 on this machine).
    pub async fn start_on(ip: IpAddr) -> std::io::Result<FileServer> {
        let socket = match ip {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_send_buffer_size(SEND_BUFFER)?;
        socket.bind(SocketAddr::new(ip, 0))?;
        let listener = socket.listen(128)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let stop = CancellationToken::new();
        let task = {
            let state = state.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    let stream = tokio::select! {
                        _ = stop.cancelled() => return,
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => stream,
                            Err(_) => continue,
                        },
                    };
                    let state = state.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = serve(&state, stream, &stop) => {}
                        }
                    });
                }
            })
        };
        Ok(FileServer {
            addr,
            state,
            stop,
            task,
        })
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr><path>` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Scripts the answer on `path` (replacing an earlier one).
    pub fn serve(&self, path: &str, route: Route) {
        self.state
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_owned(), route);
    }

    /// What `path` saw so far.
    pub fn counts(&self, path: &str) -> Counts {
        self.state
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .copied()
            .unwrap_or_default()
    }

    /// Requests received on `path`.
    pub fn requests(&self, path: &str) -> u64 {
        self.counts(path).requests
    }

    /// Body bytes written to sockets for `path`.
    pub fn body_bytes_written(&self, path: &str) -> u64 {
        self.counts(path).body_bytes
    }

    /// Requests received on any path.
    pub fn total_requests(&self) -> u64 {
        self.state
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|c| c.requests)
            .sum()
    }

    /// Waits until `path` received `count` requests, failing the test after [`PATIENCE`].
    pub async fn wait_requests(&self, path: &str, count: u64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.requests(path) < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path}: expected {count} requests, saw {}",
                self.requests(path)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

/// Reads one request and answers it as scripted.
async fn serve(state: &State, mut stream: TcpStream, stop: &CancellationToken) {
    let Some(path) = read_request(&mut stream).await else {
        return;
    };
    state.count(&path, |c| c.requests += 1);
    let route = state
        .routes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&path)
        .cloned()
        .unwrap_or_else(|| Route::status(404, b"not found".to_vec()).content_type("text/plain"));
    if !route.delay.is_zero() {
        tokio::time::sleep(route.delay).await;
    }
    let _ = respond(state, &path, &route, &mut stream, stop).await;
    let _ = stream.shutdown().await;
}

/// The path (without query) of the request on `stream`, once its head has arrived.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return None;
        }
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut buffer))
            .await
            .ok()?
            .ok()?;
        if read == 0 {
            return None;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let text = String::from_utf8_lossy(&head);
    let target = text.lines().next()?.split(' ').nth(1)?;
    Some(target.split('?').next().unwrap_or(target).to_owned())
}

/// Writes the status line, headers and body of `route`.
async fn respond(
    state: &State,
    path: &str,
    route: &Route,
    stream: &mut TcpStream,
    stop: &CancellationToken,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", route.status, reason(route.status));
    if let Some(content_type) = &route.content_type {
        head.push_str(&format!("content-type: {content_type}\r\n"));
    }
    if route.chunked {
        head.push_str("transfer-encoding: chunked\r\n");
    } else {
        let length = route.announced.unwrap_or(route.len);
        head.push_str(&format!("content-length: {length}\r\n"));
    }
    for (name, value) in &route.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;

    let piece = route.pace.map_or(PIECE, |(piece, _)| piece);
    let mut offset: u64 = 0;
    loop {
        if route.stall_after.is_some_and(|stall| offset >= stall) {
            stream.flush().await?;
            // Held until the client hangs up (or the server stops).
            let mut scratch = [0u8; 512];
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    read = stream.read(&mut scratch) => match read {
                        Ok(0) | Err(_) => return Ok(()),
                        Ok(_) => {}
                    },
                }
            }
        }
        if offset >= route.len {
            break;
        }
        let mut count = (route.len - offset).min(piece as u64);
        if let Some(stall) = route.stall_after {
            count = count.min(stall - offset);
        }
        let count = count as usize;
        let bytes = route.slice(offset, count);
        if route.chunked {
            stream
                .write_all(format!("{count:x}\r\n").as_bytes())
                .await?;
            stream.write_all(&bytes).await?;
            stream.write_all(b"\r\n").await?;
        } else {
            stream.write_all(&bytes).await?;
        }
        state.count(path, |c| c.body_bytes += count as u64);
        offset += count as u64;
        if let Some((_, every)) = route.pace {
            tokio::time::sleep(every).await;
        }
    }
    if route.chunked {
        stream.write_all(b"0\r\n\r\n").await?;
    }
    stream.flush().await
}

/// The reason phrase of a status code.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        410 => "Gone",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
