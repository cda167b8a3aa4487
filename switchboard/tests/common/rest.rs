//! The REST front door in tests: a gateway that serves KServe V2 REST
//! beside gRPC, and a plain HTTP/1.1 client (hyper) that sends exactly the
//! headers and bytes given.

use super::{ADMIN, Cluster, Options};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A gateway's two addresses.
pub struct RestGateway {
    /// `http://` URL of its gRPC listener.
    pub grpc: String,
    /// `http://host:port` of its REST listener.
    pub http: String,
}

impl Cluster {
    /// Another gateway on this cluster's Redis, serving REST as well.
    pub async fn start_rest_gateway(&self, mut config: gateway::GatewayConfig) -> RestGateway {
        config.redis_url = self.redis_url.clone();
        config.admin_key = Some(ADMIN.into());
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let urls = RestGateway {
            grpc: format!("http://{}", grpc.local_addr().unwrap()),
            http: format!("http://{}", http.local_addr().unwrap()),
        };
        tokio::spawn(gateway::serve_with_http(
            config,
            grpc,
            Some(gateway::HttpListener(http)),
            self.stopped(),
        ));
        urls
    }
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {:?}", self.body))
    }

    /// The `error` of a refusal, after checking its status.
    pub fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "answer {:?}", self);
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error string in {:?}", self.body))
            .to_string()
    }
}

/// One request on a new connection.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let uri: hyper::Uri = url.parse().expect("url");
    let host = uri.authority().expect("host").to_string();
    let stream = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(body.into())).expect("request"))
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

pub async fn get(url: &str, auth: Option<&str>) -> Answer {
    let h: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
    send("GET", url, &h, Bytes::new()).await
}

/// A JSON POST with `authorization` (when given) and more headers.
pub async fn post_json(
    url: &str,
    auth: Option<&str>,
    extra: &[(&str, &str)],
    body: &serde_json::Value,
) -> Answer {
    let mut h: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    h.extend(auth.iter().map(|a| ("authorization", *a)));
    h.extend_from_slice(extra);
    send("POST", url, &h, Bytes::from(body.to_string())).await
}

/// The digits endpoint's infer route.
pub const INFER: &str = "/v2/models/digits/infer";

pub fn rows() -> Vec<Vec<f32>> {
    (0..2)
        .map(|r| (0..64).map(|i| ((i * 7 + r * 3) % 17) as f32).collect())
        .collect()
}

pub fn json_request(binary_out: bool) -> Value {
    let flat: Vec<f32> = rows().concat();
    json!({
        "id": "req-1",
        "inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": flat}],
        "outputs": [
            {"name": "probabilities", "parameters": {"binary_data": binary_out}},
            {"name": "label", "parameters": {"binary_data": binary_out}},
        ],
    })
}

pub async fn digits_cluster(config: gateway::GatewayConfig) -> (Cluster, RestGateway, String) {
    let c = Cluster::start(Options::default()).await;
    let key = c.deploy_digits().await;
    let g = c.start_rest_gateway(config).await;
    c.wait_routable(&g.grpc, "digits", &["blue", "green"]).await;
    (c, g, key)
}
