//! A tiny scripted HTTP/1.1 server for wire-level checks the emulator cannot express: exact
//! request headers and form fields, oversized bodies, HTML error pages, hung responses, and
//! counting how often a request was really sent.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Captured {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body).into_owned().collect()
    }
}

/// What to do with a request.
pub enum Reply {
    Respond {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// Never answer (the client's timeout fires).
    Hang,
    /// Close the connection without a response.
    Close,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Reply::Respond {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

/// Where a request falls in the conversation.
pub struct Ctx<'a> {
    /// Data (non-token) requests received before this one.
    pub data_index: usize,
    /// All requests received before this one.
    pub total_index: usize,
    /// The server's own base URL, for `instance_url`.
    pub base: &'a str,
}

type Handler = dyn Fn(&Captured, &Ctx<'_>) -> Reply + Send + Sync;

pub struct MockServer {
    pub url: String,
    requests: Arc<Mutex<Vec<Captured>>>,
}

impl MockServer {
    /// Starts the server; `handler` answers each request.
    pub async fn start(handler: impl Fn(&Captured, &Ctx<'_>) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests: Arc<Mutex<Vec<Captured>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = Arc::clone(&requests);
        let base: Arc<str> = Arc::from(url.as_str());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                let handler = Arc::clone(&handler);
                tokio::spawn(serve(stream, seen, handler, Arc::clone(&base)));
            }
        });
        Self { url, requests }
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.requests.lock().clone()
    }

    /// Requests other than to the token endpoint.
    pub fn data_requests(&self) -> Vec<Captured> {
        self.requests().into_iter().filter(|r| !r.path().starts_with("/services/oauth2/")).collect()
    }
}

async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Vec<Captured>>>, handler: Arc<Handler>, base: Arc<str>) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let (data_index, total_index) = {
        let mut seen = seen.lock();
        let data = seen.iter().filter(|r| !r.path().starts_with("/services/oauth2/")).count();
        let total = seen.len();
        seen.push(request.clone());
        (data, total)
    };
    let ctx = Ctx { data_index, total_index, base: &base };
    let reply = handler(&request, &ctx);
    match reply {
        Reply::Respond { status, headers, body } => {
            let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
            let _ = stream.shutdown().await;
        }
        Reply::Hang => tokio::time::sleep(std::time::Duration::from_secs(3600)).await,
        Reply::Close => drop(stream),
    }
}

async fn read_request(stream: &mut TcpStream) -> Option<Captured> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Captured { method, target, headers, body })
}

/// A token endpoint reply naming the mock as the instance; each token is distinct.
pub fn token_reply(ctx: &Ctx<'_>) -> Reply {
    let (base, n) = (ctx.base, ctx.total_index);
    Reply::json(
        200,
        serde_json::json!({
            "access_token": format!("00D000000000001!token{n}"),
            "instance_url": base,
            "id": format!("{base}/id/00D000000000001EAA/005000000000001AAA"),
            "token_type": "Bearer",
            "issued_at": "1699999999999",
            "signature": "c2ln",
            "scope": "api"
        }),
    )
}
