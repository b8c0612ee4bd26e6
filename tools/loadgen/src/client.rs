//! The gateway's API as loadgen uses it, and the set-up of the users and data a run needs.

use std::time::Duration;

use reqwest::{Client, Method};
use serde_json::{Value, json};

/// The password every user loadgen registers gets (they are throwaway test users).
pub const PASSWORD: &str = "loadgen password 1";

/// An HTTP client for one gateway.
#[derive(Clone)]
pub struct Api {
    client: Client,
    base: String,
}

/// A response: status and JSON body (`Null` when there is none or it is not JSON).
pub type Answer = (u16, Value);

impl Api {
    /// A client for the gateway at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(256)
            .build()?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// Sends one request; `Err` means no response (refused connection, timeout).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        wait: Option<u32>,
    ) -> anyhow::Result<Answer> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(seconds) = wait {
            request = request.header("prefer", format!("wait={seconds}"));
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// GET with no token.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(Method::GET, path, None, None, None).await
    }

    /// Logs in.
    pub async fn login(&self, email: &str, password: &str) -> anyhow::Result<Answer> {
        let body = json!({"email": email, "password": password});
        self.send(Method::POST, "/v1/auth/login", None, Some(&body), None)
            .await
    }

    /// Sends a set-up request, waiting out rate limits (429 with `Retry-After`) and a stack
    /// still warming up (503), for up to a minute.
    async fn setup(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self
                .send(method.clone(), path, token, Some(body), Some(10))
                .await;
            match answer {
                Ok((200..=299, body)) => return Ok(body),
                Ok((429 | 503, _)) | Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok((status, body)) => anyhow::bail!("set-up {method} {path}: {status} {body}"),
                Err(error) => anyhow::bail!("set-up {method} {path}: {error:#}"),
            }
        }
    }
}

/// A user loadgen acts as.
#[derive(Debug, Clone)]
pub struct User {
    /// Their id.
    pub id: String,
    /// A bearer token.
    pub token: String,
}

/// What a run starts with: an admin, a teacher, students, and a few courses and posts to
/// assign and repost.
#[derive(Debug, Clone)]
pub struct World {
    /// The teacher (also a catalog teacher, by the registration event).
    pub teacher: User,
    /// Students who post and repost.
    pub students: Vec<User>,
    /// Courses the teacher created during set-up.
    pub courses: Vec<String>,
    /// Posts the students wrote during set-up.
    pub posts: Vec<String>,
    /// Distinguishes this run's names from other runs'.
    pub run: String,
}

/// Logs in as the admin, registers a teacher and `students` students, creates a few
/// courses and posts. Fails with one clear line if the stack does not cooperate.
pub async fn set_up(
    api: &Api,
    admin_email: &str,
    admin_password: &str,
    students: usize,
) -> anyhow::Result<World> {
    let run = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
    let admin = api
        .setup(
            Method::POST,
            "/v1/auth/login",
            None,
            &json!({"email": admin_email, "password": admin_password}),
        )
        .await?;
    let admin_token = admin["access_token"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the admin login returned no access_token"))?
        .to_owned();
    let register = |name: String, role: &'static str| {
        let admin_token = admin_token.clone();
        async move {
            let email = format!("{name}@loadgen.test");
            let user = api
                .setup(
                    Method::POST,
                    "/v1/auth/register",
                    Some(&admin_token),
                    &json!({"email": email, "display_name": name, "password": PASSWORD, "role": role}),
                )
                .await?;
            let login = api
                .setup(
                    Method::POST,
                    "/v1/auth/login",
                    None,
                    &json!({"email": email, "password": PASSWORD}),
                )
                .await?;
            let id = user["id"].as_str().unwrap_or_default().to_owned();
            let token = login["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            anyhow::ensure!(
                !id.is_empty() && !token.is_empty(),
                "registering {email} gave no id or token"
            );
            Ok::<_, anyhow::Error>(User { id, token })
        }
    };
    let teacher = register(format!("teacher-{run}"), "teacher").await?;
    let mut students_list = Vec::new();
    for i in 0..students.max(1) {
        students_list.push(register(format!("student{i}-{run}"), "student").await?);
    }
    let mut courses = Vec::new();
    for i in 0..3 {
        let course = api
            .setup(
                Method::POST,
                "/v1/courses",
                Some(&teacher.token),
                &json!({"code": format!("S{i}-{run}"), "title": "Set-up course"}),
            )
            .await?;
        courses.extend(course["id"].as_str().map(str::to_owned));
    }
    let mut posts = Vec::new();
    for (i, student) in students_list.iter().enumerate() {
        let post = api
            .setup(
                Method::POST,
                "/v1/posts",
                Some(&student.token),
                &json!({"body": format!("set-up post {i} of {run}")}),
            )
            .await?;
        posts.extend(post["id"].as_str().map(str::to_owned));
    }
    anyhow::ensure!(
        !courses.is_empty() && !posts.is_empty(),
        "set-up created no courses or posts (is every worker running?)"
    );
    Ok(World {
        teacher,
        students: students_list,
        courses,
        posts,
        run,
    })
}
