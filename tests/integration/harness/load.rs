//! Background load for the tests that change the deployment under traffic (a rolling restart,
//! a Sentinel failover, a Cluster slot migration): clients calling one API path in a loop
//! until told to stop, recording every answer in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::StatusCode;

use super::Browser;

/// `workers` clients calling `<path>-<worker>-<n>` until [`CallLoop::stop`].
pub struct CallLoop {
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Vec<StatusCode>>>,
}

impl CallLoop {
    /// Starts the loop: worker `i` uses `browsers[i % browsers.len()]`.
    pub fn start(browsers: &[Browser], workers: usize, path: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|worker| {
                let client = browsers[worker % browsers.len()].clone();
                let (stop, path) = (stop.clone(), path.to_owned());
                tokio::spawn(async move {
                    let mut statuses = Vec::new();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let path = format!("{path}-{worker}-{n}");
                        let response = client.api_get(&path).await;
                        let status = response.status();
                        if status != StatusCode::OK {
                            let body = response.text().await.unwrap_or_default();
                            eprintln!("{path}: {status} {}", &body[..body.len().min(200)]);
                        }
                        statuses.push(status);
                        n += 1;
                    }
                    statuses
                })
            })
            .collect();
        Self { stop, workers }
    }

    /// Stops the clients and returns each one's answers, in the order they came.
    pub async fn stop(self) -> Vec<Vec<StatusCode>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut answers = Vec::new();
        for worker in self.workers {
            answers.push(worker.await.unwrap());
        }
        answers
    }
}
