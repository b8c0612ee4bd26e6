//! `./dev images` and `./dev containers`: the images built with compose/Dockerfile on
//! Debian's Docker engine (started by host.sh, no registry), and the compose core profile
//! tested on it.

use crate::process::check;
use crate::{Paths, host};
use anyhow::Result;
use std::process::Command;

/// The tools that get an image besides the services.
const TOOLS: [&str; 2] = ["dlq", "loadgen"];

fn images() -> Vec<&'static str> {
    stack::SERVICES
        .iter()
        .map(|s| s.name)
        .chain(TOOLS)
        .collect()
}

/// Builds one image per binary, tagged `tag`; returns the engine's DOCKER_HOST.
fn build_on_engine(paths: &Paths, tag: &str) -> Result<String> {
    let docker_host = host::value(paths, &["dockerd"])?;
    check(
        Command::new("bash")
            .arg(paths.root.join("compose/images.sh"))
            .arg(tag)
            .env("DOCKER_HOST", &docker_host)
            .env("SWITCHYARD_IMAGE_WORK", paths.dev.join("images"))
            .env("SWITCHYARD_IMAGES", images().join(" ")),
    )?;
    Ok(docker_host)
}

/// `./dev images TAG`.
pub fn build(paths: &Paths, tag: &str) -> Result<()> {
    build_on_engine(paths, tag).map(|_| ())
}

/// `./dev containers TAG`: images, then compose/test/run.sh; the images are removed after,
/// and in CI the engine and its state too (locally they stay, so the next build reuses the
/// dependency layer).
pub fn containers(paths: &Paths, tag: &str) -> Result<()> {
    let venv = host::venv(paths, "mongo")?;
    let pins = host::value(paths, &["pins", "mongo"])?;
    let docker_host = build_on_engine(paths, tag)?;
    let outcome = check(
        Command::new("bash")
            .arg(paths.root.join("compose/test/run.sh"))
            .arg(tag)
            .env("DOCKER_HOST", &docker_host)
            .env(
                "SWITCHYARD_CONTAINER_WORK",
                paths.dev.join("container-test"),
            )
            .env("MONGO_WHEELS_PIP", venv.join("bin/pip"))
            .env("MONGO_PIP", pins),
    );
    for image in images() {
        let _ = Command::new("docker")
            .args(["image", "rm", &format!("switchyard/{image}:{tag}")])
            .env("DOCKER_HOST", &docker_host)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        host::run(paths, &["dockerd-stop", "--purge"])?;
    }
    outcome
}
