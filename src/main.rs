//! The `gatehouse` command line (SPEC "Command line").

use clap::{CommandFactory, Parser, Subcommand};
use gatehouse::config::Config;
use gatehouse::server::{self, RunOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "gatehouse",
    version = gatehouse::VERSION,
    about = "An API gateway on Cloudflare's Pingora"
)]
struct Cli {
    /// The config file (YAML).
    #[arg(short = 'c', long = "conf", value_name = "FILE")]
    conf: Option<PathBuf>,
    /// Validate the config and exit.
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Run in the background (pid file from the config).
    #[arg(short = 'd', long = "daemon")]
    daemon: bool,
    /// Take the listening sockets over from a running instance (graceful upgrade).
    #[arg(short = 'u', long = "upgrade")]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mint an HS256 token for trying a config out (never for production identities).
    Token {
        /// The environment variable holding the HMAC secret.
        #[arg(long = "secret-env", value_name = "VAR")]
        secret_env: String,
        /// The `sub` claim.
        #[arg(long)]
        sub: String,
        /// Extra claims, `name=value` (repeatable).
        #[arg(long = "claim", value_name = "NAME=VALUE")]
        claims: Vec<String>,
        /// Lifetime: 30s, 15m, 1h, 1d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Print the SHA-256 of an API key, as a consumer's `api_keys` lists it.
    HashKey {
        /// The key; read from standard input (one line) when omitted, which keeps it
        /// out of the shell history.
        key: Option<String>,
    },
    /// Print a password hash for a consumer's `basic.password_hash` (argon2id).
    HashPassword {
        /// The password; read from standard input (one line) when omitted.
        password: Option<String>,
        /// bcrypt (cost 12) instead of argon2id.
        #[arg(long)]
        bcrypt: bool,
    },
    /// Print a shell completion script (e.g. `gatehouse completions bash >
    /// /etc/bash_completion.d/gatehouse`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `gatehouse man > /usr/share/man/man1/gatehouse.1`.
    Man,
    /// Run a self-contained demo: two echo upstreams on loopback plus the gateway.
    Demo {
        /// The demo config.
        #[arg(short = 'c', long = "conf", default_value = "conf/demo.yaml")]
        conf: PathBuf,
    },
}

fn init_logging() {
    let env = env_logger::Env::default().default_filter_or("info");
    env_logger::Builder::from_env(env)
        .format(|buf, record| {
            // Access lines do not come through here (see `access_log`).
            writeln!(
                buf,
                "{} {:<5} {}: {}",
                gatehouse::access_log::rfc3339(std::time::SystemTime::now()),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .init();
}

/// A secret from the command line, or else one line of standard input.
fn secret_arg(given: Option<&str>, what: &str) -> Option<String> {
    let value = match given {
        Some(v) => v.to_string(),
        None => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err() {
                eprintln!("gatehouse: cannot read the {what} from standard input");
                return None;
            }
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    if value.is_empty() {
        eprintln!("gatehouse: the {what} is empty");
        return None;
    }
    Some(value)
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        eprintln!("{}: {} error(s)", path.display(), errors.0.len());
        eprintln!("{errors}");
        ExitCode::from(1)
    })
}

fn main() -> ExitCode {
    // Every TLS user in the process (Pingora, reqwest, the Redis client) on ring, chosen
    // once, so none depends on which crate features happen to be on.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Demo { conf }) => {
            init_logging();
            return demo(conf);
        }
        Some(Command::Token {
            secret_env,
            sub,
            claims,
            ttl,
        }) => return token(secret_env, sub, claims, ttl),
        Some(Command::HashKey { key }) => {
            return secret_arg(key.as_deref(), "key").map_or(ExitCode::from(2), |k| {
                println!("{}", gatehouse::consumers::hash_key(&k));
                ExitCode::SUCCESS
            })
        }
        Some(Command::HashPassword { password, bcrypt }) => {
            let Some(p) = secret_arg(password.as_deref(), "password") else {
                return ExitCode::from(2);
            };
            return match gatehouse::consumers::hash_password(&p, *bcrypt) {
                Ok(h) => {
                    println!("{h}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("gatehouse: cannot hash the password: {e}");
                    ExitCode::from(1)
                }
            };
        }
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "gatehouse",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Some(Command::Man) => {
            let mut out = std::io::stdout().lock();
            return match clap_mangen::Man::new(Cli::command()).render(&mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gatehouse man: {e}");
                    ExitCode::from(1)
                }
            };
        }
        None => {}
    }
    let Some(path) = cli.conf.as_deref() else {
        eprintln!("gatehouse: no config file given (use -c FILE; see --help)");
        return ExitCode::from(2);
    };
    // Absolute, so a reload finds the file whatever the working directory is by then.
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cli.test {
        return check(&path, config);
    }
    init_logging();
    ignore_sighup_until_ready();
    run(
        config,
        RunOptions {
            daemon: cli.daemon,
            upgrade: cli.upgrade,
        },
    )
}

/// `-t` beyond the file: build the runtime (nothing starts), resolve every upstream name
/// and ask the shared rate-limit store what it is, so a name that does not resolve or a
/// Cluster node given as a plain URL is found now rather than at start.
fn check(path: &Path, config: Config) -> ExitCode {
    let problems = match gatehouse::runtime::Runtime::build(config, None) {
        Ok(rt) => match rt.prepare_blocking() {
            Ok(warnings) => {
                for w in warnings {
                    eprintln!("warning: {w}");
                }
                vec![]
            }
            Err(errors) => errors,
        },
        Err(e) => vec![e],
    };
    if problems.is_empty() {
        println!("config OK");
        return ExitCode::SUCCESS;
    }
    eprintln!("{}: {} error(s)", path.display(), problems.len());
    for p in problems {
        eprintln!("{p}");
    }
    ExitCode::from(1)
}

/// SIGHUP's and SIGUSR1's default action ends the process. Until the supervisor installs
/// its handlers (when the server starts), a `systemctl reload` or a logrotate
/// `postrotate` racing start-up must not kill it.
fn ignore_sighup_until_ready() {
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions; tokio's
    // handlers replace it later.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGUSR1, libc::SIG_IGN);
    }
}

fn run(config: Config, opts: RunOptions) -> ExitCode {
    let listen: Vec<String> = config.listen.iter().map(|l| l.address.clone()).collect();
    let admin = config.admin;
    match server::build(config, opts) {
        Ok(server) => {
            log::info!(
                "gatehouse {} listening on {}{}",
                gatehouse::VERSION,
                listen.join(", "),
                admin.map_or(String::new(), |a| format!(", admin on {a}"))
            );
            server.run_forever()
        }
        Err(e) => {
            eprintln!("gatehouse: {e}");
            ExitCode::from(1)
        }
    }
}

/// `gatehouse demo`: start two echo upstreams where conf/demo.yaml expects them, print
/// what to try, and run the gateway in the foreground.
fn demo(conf: &Path) -> ExitCode {
    let a = std::env::var("DEMO_UPSTREAM_A").unwrap_or_else(|_| "127.0.0.1:9001".into());
    let b = std::env::var("DEMO_UPSTREAM_B").unwrap_or_else(|_| "127.0.0.1:9002".into());
    let mut upstreams = Vec::new();
    for (name, addr) in [("a", &a), ("b", &b)] {
        match gatehouse::demo::EchoServer::start(name, addr) {
            Ok(s) => upstreams.push(s),
            Err(e) => {
                eprintln!("demo: cannot start upstream {name} on {addr}: {e} (set DEMO_UPSTREAM_{} to another address)", name.to_uppercase());
                return ExitCode::from(1);
            }
        }
    }
    let config = match load(conf) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let gw = config.listen[0].address.clone();
    let admin = config.admin.map(|a| a.to_string()).unwrap_or_default();
    let secret = std::env::var("DEMO_JWT_SECRET")
        .unwrap_or_else(|_| "gatehouse-demo-secret-not-for-production".to_string());
    let token = gatehouse::auth::mint_hs256(
        secret.as_bytes(),
        "demo-user",
        &[],
        std::time::Duration::from_secs(3600),
    )
    .unwrap_or_default();
    println!(
        "\nGatehouse demo: upstreams {a} and {b}, gateway on {gw}, admin on {admin}\n\n\
         Routing and balancing (weighted 3:1, see \"upstream\" in the answer):\n  \
         curl -s http://{gw}/api/echo/hello\n  \
         curl -i http://{gw}/api/echo/status/503     # upstream status passes through\n  \
         curl -i -X DELETE http://{gw}/api/echo/x    # 405 with Allow\n  \
         curl -i http://{gw}/nowhere                 # 404 JSON\n\n\
         JWT (a ready token for sub=demo-user, valid 1 h):\n  \
         TOKEN={token}\n  \
         curl -i http://{gw}/api/private/me                                  # 401\n  \
         curl -i -H \"Authorization: Bearer $TOKEN\" http://{gw}/api/private/me   # 200, upstream sees X-User-ID\n\n\
         Rate limit (5 a minute per IP; watch RateLimit-Remaining, then 429 with Retry-After):\n  \
         for i in 1 2 3 4 5 6; do curl -s -o /dev/null -D - http://{gw}/api/limited/x | grep -iE '^HTTP|^ratelimit|^retry-after'; done\n\n\
         Cache (X-Cache: MISS, then HIT for 30 s):\n  \
         curl -s -o /dev/null -D - http://{gw}/api/cached/item | grep -i x-cache\n  \
         curl -s -o /dev/null -D - http://{gw}/api/cached/item | grep -i x-cache\n\n\
         Operations:\n  \
         dashboard:  http://{admin}/\n  \
         curl -s http://{admin}/admin/status\n  \
         curl -s http://{admin}/metrics | grep ^gatehouse_\n\n\
         Ctrl-C to stop.\n"
    );
    let code = run(config, RunOptions::default());
    drop(upstreams);
    code
}

/// `gatehouse token`: print an HS256 token signed with the secret in `$VAR`.
fn token(secret_env: &str, sub: &str, claims: &[String], ttl: &str) -> ExitCode {
    let Ok(secret) = std::env::var(secret_env) else {
        eprintln!("gatehouse token: environment variable {secret_env} is not set");
        return ExitCode::from(2);
    };
    let ttl = match gatehouse::config::units::parse_duration(ttl) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("gatehouse token: --ttl: {e}");
            return ExitCode::from(2);
        }
    };
    let mut pairs = Vec::new();
    for c in claims {
        match c.split_once('=') {
            Some((k, v)) if !k.is_empty() => pairs.push((k.to_string(), v.to_string())),
            _ => {
                eprintln!("gatehouse token: --claim expects NAME=VALUE, got {c:?}");
                return ExitCode::from(2);
            }
        }
    }
    match gatehouse::auth::mint_hs256(secret.as_bytes(), sub, &pairs, ttl) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gatehouse token: {e}");
            ExitCode::from(1)
        }
    }
}
