//! The record of accepted operations and their verification: each operation must end
//! `succeeded` with its effect present exactly once.
//!
//! Effects are looked up through the public API only, the way a client would see them:
//! a post by its unique body in its author's timeline (counted, so a doubled post shows),
//! a course by its id and code, a registration by logging in, an assignment in the
//! teacher's course list, a repost in the reposter's timeline.

use std::collections::HashMap;
use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::{Api, PASSWORD};

/// One accepted operation and what identifies its effect.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Accepted {
    /// What kind of write.
    pub kind: Kind,
    /// The operation id the gateway returned.
    pub operation_id: String,
    /// The unique thing to look for: post body, course code, e-mail, course id.
    pub key: String,
    /// The user it belongs to (author, teacher, reposter), when the check needs one.
    pub owner: Option<String>,
}

/// Kinds of writes loadgen makes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `POST /v1/auth/register`.
    Register,
    /// `POST /v1/courses`.
    Course,
    /// `PUT /v1/teachers/{id}/courses/{course}`.
    Assign,
    /// `POST /v1/posts`.
    Post,
    /// `POST /v1/posts/{id}/reposts`.
    Repost,
}

/// What became of one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Succeeded, effect present once.
    Verified,
    /// Accepted, but no effect (or the operation is unknown): the bug this hunts.
    Lost,
    /// The effect is there more than once.
    Duplicated,
    /// Still `accepted` when the verification timed out.
    Pending,
    /// The worker rejected it (a rule: already reposted, course already assigned…).
    Rejected,
}

/// Counts per verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Operations checked.
    pub total: usize,
    /// Per verdict.
    pub verified: usize,
    /// Lost.
    pub lost: usize,
    /// Duplicated.
    pub duplicated: usize,
    /// Pending.
    pub pending: usize,
    /// Rejected by a business rule.
    pub rejected: usize,
}

impl Tally {
    fn add(&mut self, verdict: Verdict) {
        self.total += 1;
        match verdict {
            Verdict::Verified => self.verified += 1,
            Verdict::Lost => self.lost += 1,
            Verdict::Duplicated => self.duplicated += 1,
            Verdict::Pending => self.pending += 1,
            Verdict::Rejected => self.rejected += 1,
        }
    }

    /// True when nothing was lost or doubled.
    pub fn clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0
    }
}

/// Appends accepted operations to a JSON-lines file.
pub struct Recorder {
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl Recorder {
    /// Records to `path` (truncating it), or nowhere.
    pub fn create(path: Option<&Path>) -> anyhow::Result<Self> {
        let file = match path {
            Some(path) => Some(std::io::BufWriter::new(std::fs::File::create(path)?)),
            None => None,
        };
        Ok(Self { file })
    }

    /// Writes one line.
    pub fn write(&mut self, accepted: &Accepted) -> anyhow::Result<()> {
        if let Some(file) = &mut self.file {
            serde_json::to_writer(&mut *file, accepted)?;
            file.write_all(b"\n")?;
            // Line by line: a run that is killed still leaves every accepted operation
            // on disk for --verify-only.
            file.flush()?;
        }
        Ok(())
    }

    /// Flushes to disk.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(file) = &mut self.file {
            file.flush()?;
        }
        Ok(())
    }
}

/// Reads a record written by [`Recorder`].
pub fn read_record(path: &Path) -> anyhow::Result<Vec<Accepted>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut accepted = Vec::new();
    for (number, line) in file.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), number + 1))?;
        accepted.push(entry);
    }
    Ok(accepted)
}

/// The operation's final state, polled until it is not `accepted` or `deadline` passes.
async fn outcome(api: &Api, operation_id: &str, deadline: Instant) -> Option<Value> {
    loop {
        match api
            .get_json(&format!("/v1/operations/{operation_id}"))
            .await
        {
            Ok((200, body)) if body["status"] != "accepted" => return Some(body),
            Ok((404, _)) => return Some(Value::Null),
            _ => {}
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Answers that say nothing about an effect: rate limited, or the service busy or away
/// for a moment. Verification waits them out instead of calling the effect lost.
fn transient(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// GET `path`, waiting out transient answers for up to two minutes.
async fn read(api: &Api, path: &str) -> anyhow::Result<crate::client::Answer> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = api.get_json(path).await?;
        if !transient(status) || Instant::now() >= deadline {
            return Ok((status, body));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Bodies of every post (and repost) in `user`'s timeline, with how often each appears.
async fn timeline_bodies(api: &Api, user: &str) -> anyhow::Result<HashMap<String, usize>> {
    let mut counts = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/users/{user}/posts?limit=100&cursor={c}"),
            None => format!("/v1/users/{user}/posts?limit=100"),
        };
        let (status, page) = read(api, &path).await?;
        anyhow::ensure!(status == 200, "GET {path}: {status}");
        for post in page["items"].as_array().into_iter().flatten() {
            let key = match post["repost_of"].as_str() {
                Some(original) => format!("repost:{original}"),
                None => post["body"].as_str().unwrap_or_default().to_owned(),
            };
            *counts.entry(key).or_default() += 1;
        }
        match page["next_cursor"].as_str() {
            Some(next) if !next.is_empty() => cursor = Some(next.to_owned()),
            _ => break,
        }
    }
    Ok(counts)
}

/// Verifies every operation; waits up to `timeout` in all for outcomes.
pub async fn verify(
    api: &Api,
    accepted: &[Accepted],
    timeout: Duration,
) -> anyhow::Result<(Tally, Vec<String>)> {
    let deadline = Instant::now() + timeout;
    let mut tally = Tally::default();
    let mut problems = Vec::new();
    let mut timelines: HashMap<String, HashMap<String, usize>> = HashMap::new();
    let mut teacher_courses: HashMap<String, Vec<String>> = HashMap::new();
    for entry in accepted {
        let verdict = match outcome(api, &entry.operation_id, deadline).await {
            None => Verdict::Pending,
            Some(Value::Null) => Verdict::Lost,
            Some(view) if view["status"] == "rejected" => Verdict::Rejected,
            Some(view) => {
                let found =
                    effect_count(api, entry, &view, &mut timelines, &mut teacher_courses).await?;
                match found {
                    0 => Verdict::Lost,
                    1 => Verdict::Verified,
                    _ => Verdict::Duplicated,
                }
            }
        };
        if matches!(
            verdict,
            Verdict::Lost | Verdict::Duplicated | Verdict::Pending
        ) {
            problems.push(format!(
                "{verdict:?}: {:?} {} ({})",
                entry.kind, entry.operation_id, entry.key
            ));
        }
        tally.add(verdict);
    }
    Ok((tally, problems))
}

/// How many times the effect of a succeeded operation is visible.
async fn effect_count(
    api: &Api,
    entry: &Accepted,
    view: &Value,
    timelines: &mut HashMap<String, HashMap<String, usize>>,
    teacher_courses: &mut HashMap<String, Vec<String>>,
) -> anyhow::Result<usize> {
    let owner = entry.owner.clone().unwrap_or_default();
    Ok(match entry.kind {
        Kind::Post | Kind::Repost => {
            if !timelines.contains_key(&owner) {
                let bodies = timeline_bodies(api, &owner).await?;
                timelines.insert(owner.clone(), bodies);
            }
            timelines
                .get(&owner)
                .and_then(|t| t.get(&entry.key))
                .copied()
                .unwrap_or(0)
        }
        Kind::Course => {
            let id = view["resource"]["id"].as_str().unwrap_or_default();
            let (status, course) = read(api, &format!("/v1/courses/{id}")).await?;
            usize::from(status == 200 && course["code"] == entry.key.as_str())
        }
        Kind::Register => {
            // Logins are rate limited per client: wait out a 429 (or a busy accounts)
            // rather than call the registration lost.
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let (status, _) = api.login(&entry.key, PASSWORD).await?;
                if !transient(status) || Instant::now() >= deadline {
                    break usize::from(status == 200);
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        Kind::Assign => {
            if !teacher_courses.contains_key(&owner) {
                let (status, page) = read(api, &format!("/v1/teachers/{owner}/courses")).await?;
                anyhow::ensure!(status == 200, "GET teacher courses: {status}");
                // A list of courses (or a page of them).
                let ids = page["items"]
                    .as_array()
                    .or_else(|| page.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["id"].as_str().map(str::to_owned))
                    .collect();
                teacher_courses.insert(owner.clone(), ids);
            }
            teacher_courses
                .get(&owner)
                .map_or(0, |ids| ids.iter().filter(|id| **id == entry.key).count())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_is_clean_only_without_lost_or_doubled_operations() {
        let mut tally = Tally::default();
        for verdict in [Verdict::Verified, Verdict::Pending, Verdict::Rejected] {
            tally.add(verdict);
        }
        assert!(tally.clean());
        assert_eq!((tally.total, tally.verified, tally.pending), (3, 1, 1));
        tally.add(Verdict::Duplicated);
        assert!(!tally.clean());
        let mut lost = Tally::default();
        lost.add(Verdict::Lost);
        assert!(!lost.clean());
    }

    #[test]
    fn a_record_round_trips_through_its_file() {
        let path = std::env::temp_dir().join(format!("loadgen-{}.jsonl", uuid::Uuid::new_v4()));
        let entries = vec![
            Accepted {
                kind: Kind::Post,
                operation_id: "a.social.b".into(),
                key: "body 1".into(),
                owner: Some("u1".into()),
            },
            Accepted {
                kind: Kind::Register,
                operation_id: "c.accounts.d".into(),
                key: "x@example.org".into(),
                owner: None,
            },
        ];
        let mut recorder = Recorder::create(Some(&path)).unwrap();
        for entry in &entries {
            recorder.write(entry).unwrap();
        }
        recorder.finish().unwrap();
        assert_eq!(read_record(&path).unwrap(), entries);
        std::fs::write(&path, "{not json\n").unwrap();
        assert!(read_record(&path).unwrap_err().to_string().contains(":1:"));
        let _ = std::fs::remove_file(&path);
    }
}
