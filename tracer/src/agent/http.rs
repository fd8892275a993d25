//! The HTTP endpoint (hyper 1, HTTP/1.1): `GET /metrics` and `GET /healthz`. Each connection is
//! a task on the agent's one thread. `/metrics` is the OpenMetrics text format, or Prometheus's
//! protobuf format (native histograms) when the scraper's `Accept` header prefers it.

use std::{cell::RefCell, convert::Infallible, rc::Rc};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ACCEPT, CONTENT_TYPE},
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
    let reply = |status, content_type: &str, body: Bytes| {
        let mut response = Response::new(Full::new(body));
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
            let protobuf = request
                .headers()
                .get_all(ACCEPT)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .any(prefers_protobuf);
            let snapshot = agent.borrow_mut().snapshot();
            let encoded = if protobuf {
                snapshot
                    .encode_protobuf()
                    .map(|body| (metrics::PROTOBUF_CONTENT_TYPE, Bytes::from(body)))
                    .ok()
            } else {
                snapshot
                    .encode()
                    .map(|body| (metrics::CONTENT_TYPE, Bytes::from(body)))
                    .ok()
            };
            match encoded {
                Some((content_type, body)) => reply(StatusCode::OK, content_type, body),
                None => reply(
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

/// Whether an `Accept` header value ranks Prometheus's protobuf format
/// (`application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily;
/// encoding=delimited`) at least as high as anything else it accepts, and above 0. Prometheus
/// asks for it first when it ingests native histograms (`--enable-feature=native-histograms`),
/// and for the text formats first otherwise.
fn prefers_protobuf(accept: &str) -> bool {
    let (mut protobuf, mut other) = (0f64, 0f64);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media_type = parts.next().unwrap_or_default();
        let (mut q, mut proto, mut delimited) = (1.0, false, false);
        for parameter in parts {
            let Some((name, value)) = parameter.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "q" => q = value.parse().unwrap_or(0.0),
                "proto" => proto = value == "io.prometheus.client.MetricFamily",
                "encoding" => delimited = value == "delimited",
                _ => {}
            }
        }
        if media_type.eq_ignore_ascii_case("application/vnd.google.protobuf") && proto && delimited
        {
            protobuf = protobuf.max(q);
        } else {
            other = other.max(q);
        }
    }
    protobuf > 0.0 && protobuf >= other
}

#[cfg(test)]
mod tests {
    use super::prefers_protobuf;

    #[test]
    fn protobuf_only_when_the_scraper_prefers_it() {
        // Prometheus 2.53 with and without --enable-feature=native-histograms.
        assert!(prefers_protobuf(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,application/openmetrics-text;version=1.0.0;q=0.4,application/openmetrics-text;version=0.0.1;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
        ));
        assert!(!prefers_protobuf(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.25"
        ));
        assert!(!prefers_protobuf("*/*"));
        assert!(!prefers_protobuf(""));
        // Another message or a text encoding of it is not what the agent serves.
        assert!(!prefers_protobuf(
            "application/vnd.google.protobuf;proto=other.Message;encoding=delimited"
        ));
        assert!(!prefers_protobuf(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"
        ));
        assert!(!prefers_protobuf(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0"
        ));
    }
}
