//! Certificates made by a test with `openssl`: a private CA and, signed by it, a server
//! certificate (for 127.0.0.1 and localhost) and a client certificate.

use std::path::{Path, PathBuf};
use std::process::Command;

use vestibule::session::store::RedisTls;

/// PEM files made by the test for a TLS-only Redis that requires client certificates.
#[derive(Clone)]
pub struct TlsFiles {
    /// The test's own CA (it signed both certificates below).
    pub ca: PathBuf,
    /// Redis's certificate (for 127.0.0.1 and localhost) and key.
    pub server: (PathBuf, PathBuf),
    /// The client certificate and key Vestibule presents.
    pub client: (PathBuf, PathBuf),
}

impl TlsFiles {
    /// These files as Vestibule's TLS settings.
    pub fn redis_tls(&self) -> RedisTls {
        let read = |path: &PathBuf| std::fs::read(path).unwrap();
        RedisTls {
            ca_pem: Some(read(&self.ca)),
            client_pem: Some((read(&self.client.0), read(&self.client.1))),
        }
    }
}

/// Runs `openssl` with `args` in `dir`, asserting that it succeeds.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Makes an EC P-256 private key (PKCS#8 PEM, as `openssl genpkey` writes it) in `dir`.
pub fn make_p256_key(dir: &Path) -> PathBuf {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "client-key.pem",
        ],
    );
    dir.join("client-key.pem")
}

/// Makes a CA and, signed by it, a server and a client certificate, with `openssl`.
pub fn make_certificates(dir: &Path) -> TlsFiles {
    let run = |args: &[&str]| openssl(dir, args);
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=Vestibule test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    // The server certificate is also a client's: Cluster nodes present it to each other on the
    // TLS cluster bus.
    for (name, extensions) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN=vestibule-test-{name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ]);
    }
    TlsFiles {
        ca: dir.join("ca.crt"),
        server: (dir.join("server.crt"), dir.join("server.key")),
        client: (dir.join("client.crt"), dir.join("client.key")),
    }
}

/// A server certificate for 127.0.0.1 signed by `files`' CA that expired long ago (valid in
/// January 2024 only), with its key: `openssl ca` is the one that sets dates in the past.
pub fn make_expired_server_certificate(dir: &Path, files: &TlsFiles) -> (PathBuf, PathBuf) {
    let dir = dir.join("expired");
    std::fs::create_dir_all(dir.join("db")).unwrap();
    std::fs::write(dir.join("db/index.txt"), "").unwrap();
    std::fs::write(dir.join("db/serial"), "01\n").unwrap();
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = test\n[test]\ndatabase = db/index.txt\nnew_certs_dir = db\n\
         serial = db/serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n\
         [any]\ncommonName = supplied\n\
         [server]\nsubjectAltName = IP:127.0.0.1,DNS:localhost\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    let run = |args: &[&str]| openssl(&dir, args);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=vestibule-test-expired",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    let (ca, ca_key) = (files.ca.clone(), files.ca.with_file_name("ca.key"));
    run(&[
        "ca",
        "-batch",
        "-config",
        "ca.cnf",
        "-cert",
        ca.to_str().unwrap(),
        "-keyfile",
        ca_key.to_str().unwrap(),
        "-in",
        "server.csr",
        "-out",
        "server.crt",
        "-startdate",
        "20240101000000Z",
        "-enddate",
        "20240201000000Z",
        "-extensions",
        "server",
    ]);
    (dir.join("server.crt"), dir.join("server.key"))
}
