//! The HTTP endpoint (hyper 1, HTTP/1.1): `GET /metrics` (OpenMetrics text) and `GET /healthz`.
//! Each connection is a task on the agent's one thread.

use std::{cell::RefCell, convert::Infallible, rc::Rc};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::CONTENT_TYPE,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;

use super::{Agent, metrics};

/// Serves one accepted connection until the client closes it.
pub(super) fn spawn_connection(stream: tokio::net::TcpStream, agent: Rc<RefCell<Agent>>) {
    tokio::task::spawn_local(async move {
        let service = service_fn(move |request| {
            let agent = Rc::clone(&agent);
            async move { Ok::<_, Infallible>(respond(&request, &agent)) }
        });
        // A client that goes away mid-request is not the agent's error.
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
}

fn respond(request: &Request<Incoming>, agent: &RefCell<Agent>) -> Response<Full<Bytes>> {
    let reply = |status, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response.headers_mut().insert(CONTENT_TYPE, value);
        }
        response
    };
    let text = "text/plain; charset=utf-8";
    if request.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, text, "GET only\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            let snapshot = agent.borrow_mut().snapshot();
            match snapshot.encode() {
                Ok(body) => reply(StatusCode::OK, metrics::CONTENT_TYPE, body),
                Err(_) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    text,
                    "encoding failed\n".into(),
                ),
            }
        }
        "/healthz" => reply(StatusCode::OK, text, "ok\n".into()),
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<html><body><a href=\"/metrics\">futexscope metrics</a></body></html>\n".into(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            text,
            "not found: try /metrics\n".into(),
        ),
    }
}
