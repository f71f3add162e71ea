//! The real `vestibule` binary as a process, for what only a process shows: signals, exit,
//! a listener that closes. Its environment is cleared of `VESTIBULE_*` but for the shutdown
//! delay the test chooses.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::wait_for;

/// One running `vestibule` process.
pub struct VestibuleProcess {
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    /// Whether it logs JSON (else text).
    json: bool,
    shutdown_delay_secs: u64,
    /// Its base URL (`http://127.0.0.1:<port>`).
    pub base: String,
}

impl VestibuleProcess {
    /// Writes `config` (TOML, whose `listen` is `port`) to `dir` and starts the binary on it;
    /// its log (text) goes to `dir` too, and is checked for secrets when it is dropped.
    pub fn spawn(config: &str, port: u16, dir: &Path, shutdown_delay_secs: u64) -> Self {
        let path = dir.join(format!("vestibule-{port}.toml"));
        std::fs::write(&path, config).unwrap();
        let mut process = Self {
            child: None,
            config: path,
            log: dir.join(format!("vestibule-{port}.log")),
            json: false,
            shutdown_delay_secs,
            base: format!("http://127.0.0.1:{port}"),
        };
        process.start();
        process
    }

    /// Like [`VestibuleProcess::spawn`], logging JSON lines, for
    /// [`VestibuleProcess::log_events`].
    pub fn spawn_logging(config: &str, port: u16, dir: &Path) -> Self {
        let path = dir.join(format!("vestibule-{port}.toml"));
        std::fs::write(&path, config).unwrap();
        let mut process = Self {
            child: None,
            config: path,
            log: dir.join(format!("vestibule-{port}.log")),
            json: true,
            shutdown_delay_secs: 0,
            base: format!("http://127.0.0.1:{port}"),
        };
        process.start();
        process
    }

    /// Every line it logged so far, as JSON (it must have been spawned logging).
    pub fn log_events(&self) -> Vec<Value> {
        assert!(self.json, "spawned with spawn_logging");
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|error| panic!("not a JSON log line ({error}): {line}"))
            })
            .collect()
    }

    /// The raw log text.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Replaces its configuration (TOML, same `listen`); the next [`VestibuleProcess::start`]
    /// runs with it, as a redeploy with a changed config does.
    pub fn set_config(&self, config: &str) {
        std::fs::write(&self.config, config).unwrap();
    }

    /// (Re)starts the binary with its configuration.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut command = Command::new(env!("CARGO_BIN_EXE_vestibule"));
        for (name, _) in std::env::vars() {
            if name.starts_with("VESTIBULE_") {
                command.env_remove(name);
            }
        }
        command
            .arg("--config")
            .arg(&self.config)
            .env(
                "VESTIBULE_SERVER__SHUTDOWN_DELAY_SECS",
                self.shutdown_delay_secs.to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        command
            .env("VESTIBULE_LOG", "info,vestibule=trace")
            .stderr(Stdio::from(file));
        if self.json {
            command.env("VESTIBULE_LOG_FORMAT", "json");
        }
        let child = command.spawn().expect("the vestibule binary runs");
        self.child = Some(child);
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM, as an orchestrator does.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until the process has exited (after [`VestibuleProcess::terminate`]); its status.
    pub async fn wait_for_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("running");
        let status = wait_for("vestibule to exit", limit, || {
            let exited = child.try_wait().unwrap();
            async move { exited }
        })
        .await;
        self.child = None;
        status
    }

    /// `GET /readyz` on a new connection: status and body, or `None` when nothing answers.
    pub async fn readiness(&self) -> Option<(StatusCode, Value)> {
        let response = reqwest::Client::new()
            .get(format!("{}/readyz", self.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = response.status();
        Some((status, response.json().await.ok()?))
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_until_ready(&self) {
        wait_for("vestibule to be ready", Duration::from_secs(30), || async {
            let (status, _) = self.readiness().await?;
            (status == StatusCode::OK).then_some(())
        })
        .await;
    }
}

impl Drop for VestibuleProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            super::logs::assert_no_secrets(
                &self.log_text(),
                &[
                    super::ENCRYPTION_KEY.to_owned(),
                    super::provider::client_secret().to_owned(),
                ],
                "the vestibule binary's log",
            );
        }
    }
}

/// A deployment whose public URL is the real binary's (so browsers log in through it and its
/// JSON log and figures are the scenario's alone), with an in-process instance of the same
/// configuration beside it; `for_binary` adapts the configuration the binary runs with (a port
/// of its own for a listener both would bind). The binary is ready when this returns; its
/// files are in the returned directory.
pub async fn binary_in_front(
    builder: super::TestAppBuilder,
    for_binary: impl FnOnce(String) -> String,
) -> (super::TestApp, VestibuleProcess, PathBuf) {
    let public = super::free_port();
    let app = builder.public_port(public).start().await;
    let dir = std::env::temp_dir().join(format!("vestibule-binary-{}", super::free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = for_binary(app.config_listening_on(public));
    let binary = VestibuleProcess::spawn_logging(&config, public, &dir);
    binary.wait_until_ready().await;
    (app, binary, dir)
}
