//! Real ingresses as child processes, each in a directory of its own on a
//! loopback port: nginx (the rolling restart's load balancer, and
//! forward-auth by `auth_request`) and Caddy (forward-auth by
//! `forward_auth`). A test that needs one fails, not skips, when it is not
//! installed; `.ci/run` installs both.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// nginx as a child process.
pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl Nginx {
    /// nginx with `http` inside its `http { }` block, next to the logs and
    /// temporary paths every test needs. `http` is given the address to
    /// `listen` on; the access log format `upstreams` names the upstream
    /// each request went to.
    pub fn start(http: impl FnOnce(SocketAddr) -> String) -> Nginx {
        let binary = binary("nginx", &["/usr/sbin/nginx"]).expect(
            "nginx is not installed: this test needs it (apt-get install nginx; .ci/run \
             installs it)",
        );
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let d = dir.path().display();
        let config = format!(
            r#"worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format upstreams '$msec $request_method $uri $status upstream=$upstream_addr upstream_status=$upstream_status';
    access_log {d}/access.log upstreams;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{http}
}}
"#,
            http = http(addr)
        );
        let config_path = dir.path().join("nginx.conf");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting nginx");
        wait_until_listening(&mut child, addr, || read(&dir.path().join("error.log")));
        Nginx { child, dir, addr }
    }

    pub fn error_log(&self) -> String {
        read(&self.dir.path().join("error.log"))
    }

    pub fn access_log(&self) -> String {
        read(&self.dir.path().join("access.log"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // The master stops its worker on SIGTERM; SIGKILL would orphan it.
        terminate(&mut self.child);
    }
}

/// Caddy as a child process, with its admin endpoint off and its data and
/// configuration directories inside its own.
pub struct Caddy {
    child: Child,
    /// Kept until Caddy is gone.
    _dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl Caddy {
    /// Caddy with the site block `site` (given the address to serve plain
    /// HTTP on) after global options that turn off the admin endpoint,
    /// and automatic HTTPS (its data and saved configuration stay in its own directory).
    pub fn start(site: impl FnOnce(SocketAddr) -> String) -> Caddy {
        let binary = binary("caddy", &["/usr/bin/caddy"]).expect(
            "caddy is not installed: this test needs it (apt-get install caddy; .ci/run \
             installs it)",
        );
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let caddyfile = format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{}\n", site(addr));
        let caddyfile_path = dir.path().join("Caddyfile");
        std::fs::write(&caddyfile_path, caddyfile).unwrap();
        let log = std::fs::File::create(dir.path().join("caddy.log")).unwrap();
        let mut child = Command::new(binary)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&caddyfile_path)
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting caddy");
        wait_until_listening(&mut child, addr, || read(&dir.path().join("caddy.log")));
        Caddy {
            child,
            _dir: dir,
            addr,
        }
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

fn wait_until_listening(child: &mut Child, addr: SocketAddr, log: impl Fn() -> String) {
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the ingress exited ({status}):\n{}", log());
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the ingress did not listen:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then SIGKILL if it has not gone within 5 s.
fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `name` on the `PATH`, or at one of the usual places.
fn binary(name: &str, usual: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    on_path
        .chain(usual.iter().map(PathBuf::from))
        .find(|candidate| candidate.is_file())
}

/// A loopback address nothing listens on right now.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
