//! A client for the gateway's HTTP API, as the end-to-end tests drive it.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

/// The gateway at `address`, with a client that sends a bearer token and one that sends
/// none.
#[derive(Clone)]
pub struct Api {
    /// Where the gateway listens.
    pub address: SocketAddr,
    /// Sends `token` with every request (unless the request sets its own).
    pub client: Client,
    /// Sends no token.
    pub anonymous: Client,
    /// The bearer token `client` sends.
    pub token: String,
}

impl Api {
    /// Waits (up to 20 s) for the gateway at `address` to be ready, then logs in as
    /// `email` and returns a client carrying that user's token.
    pub async fn ready_as(address: SocketAddr, email: &str, password: &str) -> Self {
        let anonymous = Client::new();
        let ready = format!("http://{address}/readyz");
        crate::eventually("gateway /readyz", Duration::from_secs(20), || async {
            match anonymous.get(&ready).send().await {
                Ok(r) if r.status() == StatusCode::OK => Ok(()),
                Ok(r) => Err(format!("/readyz answered {}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        let token = login(&anonymous, address, email, password).await;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        let client = Client::builder()
            .default_headers(headers)
            .build()
            .expect("client");
        Self {
            address,
            client,
            anonymous,
            token,
        }
    }

    /// The URL of `path` on the gateway.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// POSTs JSON, waiting up to `wait` seconds for the outcome.
    pub async fn post(&self, path: &str, body: &Value, wait: Option<u64>) -> Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(seconds) = wait {
            request = request.header("prefer", format!("wait={seconds}"));
        }
        request.send().await.expect("request sent")
    }

    /// GETs `path`.
    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// GETs `path` and returns the body as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.get(path).await.text().await.expect("body")
    }

    /// Creates a course and returns its JSON, asserting success.
    pub async fn create_course(&self, code: &str) -> Value {
        let response = self
            .post(
                "/v1/courses",
                &json!({"code": code, "title": format!("Course {code}")}),
                Some(10),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "creating {code}");
        response.json().await.expect("course json")
    }

    /// Creates a teacher and returns its JSON, asserting success.
    pub async fn create_teacher(&self, name: &str) -> Value {
        let email = format!("{}@example.org", name.to_lowercase());
        let response = self
            .post(
                "/v1/teachers",
                &json!({"name": name, "email": email}),
                Some(10),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "creating {name}");
        response.json().await.expect("teacher json")
    }

    /// Polls an operation until it leaves `accepted`, or panics after 10 s.
    pub async fn wait_for_operation(&self, location: &str) -> Value {
        self.eventually(location, |body| body["status"] != "accepted")
            .await
    }

    /// Logs in and returns the bearer token.
    pub async fn login(&self, email: &str, password: &str) -> String {
        login(&self.anonymous, self.address, email, password).await
    }

    /// Registers a user (with this client's token, so as an admin any role) and returns
    /// (id, token).
    pub async fn user(&self, name: &str, role: &str) -> (String, String) {
        let email = format!("{}@example.org", name.to_lowercase());
        let body = json!({"email": email, "display_name": name, "password": "long enough password", "role": role});
        let response = self.post("/v1/auth/register", &body, Some(10)).await;
        assert_eq!(response.status(), StatusCode::CREATED, "registering {name}");
        let user: Value = response.json().await.expect("user json");
        let token = self.login(&email, "long enough password").await;
        (user["id"].as_str().expect("id").to_owned(), token)
    }

    /// Polls `path` until `done` holds for its JSON, or panics after 10 s.
    pub async fn eventually(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        crate::eventually(path, Duration::from_secs(10), || async {
            let body: Value = self.get(path).await.json().await.unwrap_or(Value::Null);
            if done(&body) {
                Ok(body)
            } else {
                Err(body.to_string())
            }
        })
        .await
    }
}

async fn login(client: &Client, address: SocketAddr, email: &str, password: &str) -> String {
    let response = client
        .post(format!("http://{address}/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login sent");
    assert_eq!(response.status(), StatusCode::OK, "login of {email}");
    let body: Value = response.json().await.expect("token json");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// Asserts a problem+json response with `status` and returns its body.
pub async fn assert_problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "problem has a detail: {body}"
    );
    body
}
