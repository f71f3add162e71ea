//! A real nginx (Debian's): the load balancer in front of several Vestibule instances
//! (round-robin, no stickiness, one request per connection to each instance, and a refused
//! connection retried on the next instance), or a front that terminates TLS for one server.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_for;

/// An nginx owned by one test.
pub struct Nginx {
    child: Child,
    dir: std::path::PathBuf,
}

impl Nginx {
    /// Listens on 127.0.0.1:`port` and balances over `instances` (ports on 127.0.0.1).
    pub async fn start(port: u16, instances: &[u16]) -> Self {
        let dir = std::env::temp_dir().join(format!("vestibule-test-nginx-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let servers: String = instances
            .iter()
            // nginx (open source) has no active health checks: never mark an instance down
            // for its fail_timeout (10 s by default), so a refused connection just moves the
            // request on to the next instance (proxy_next_upstream's default).
            .map(|instance| format!("    server 127.0.0.1:{instance} max_fails=0;\n"))
            .collect();
        let d = dir.display();
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\nhttp {{\n\
             access_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
             upstream vestibule {{\n{servers}  }}\n  server {{\n    listen 127.0.0.1:{port};\n\
             location / {{\n      proxy_pass http://vestibule;\n      proxy_http_version 1.1;\n\
             proxy_set_header Host $http_host;\n\
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    }}\n  }}\n}}\n"
        );
        Self::run(port, dir, &config).await
    }

    /// Listens on 127.0.0.1:`port` with TLS (`certificate` and `key`, PEM) and passes every
    /// request on to plain HTTP at 127.0.0.1:`backend`, saying `X-Forwarded-Proto: https`.
    pub async fn tls_front(
        port: u16,
        backend: u16,
        certificate: &std::path::Path,
        key: &std::path::Path,
    ) -> Self {
        let dir = std::env::temp_dir().join(format!("vestibule-test-nginx-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let (certificate, key) = (certificate.display(), key.display());
        let config = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\nhttp {{\n\
             access_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
             server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {certificate};\n\
             ssl_certificate_key {key};\n    location / {{\n\
             proxy_pass http://127.0.0.1:{backend};\n      proxy_http_version 1.1;\n\
             proxy_set_header Host $http_host;\n\
             proxy_set_header X-Forwarded-Proto https;\n    }}\n  }}\n}}\n"
        );
        Self::run(port, dir, &config).await
    }

    /// Starts nginx with `config` from `dir` and waits until it listens on `port`.
    async fn run(port: u16, dir: std::path::PathBuf, config: &str) -> Self {
        let d = dir.display();
        let path = dir.join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(format!("{d}/"))
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot start nginx ({error}); install it: apt-get install -y nginx")
            });
        wait_for("nginx to listen", Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        Self { child, dir }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
