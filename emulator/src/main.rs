//! `enrolld-emulator`: a local JD or Tencent cloud for testing a device
//! without credentials, and the demo that enrolls a sample photo into one.
//!
//! It is a program of its own so that the device binary, `enrolld`, carries
//! no HTTPS server and no CA generator.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use enrolld::model::Provider;
use enrolld_emulator::{demo, serve, EmulatorConfig, Fault, JdShape};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "enrolld-emulator",
    version,
    about = "Local JD NeuHub / Tencent Cloud IAI emulators (loopback only) and the enrolld demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a local JD or Tencent cloud emulator over HTTPS until SIGTERM or SIGINT.
    Serve {
        /// `jd` or `tencent`.
        vendor: Provider,
        /// Address to listen on (loopback only); port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// Where to write the emulator's CA certificate (for tls.extra_ca_file).
        #[arg(long, value_name = "PATH")]
        ca_out: PathBuf,
        /// The JD appkey or Tencent SecretId requests must carry.
        #[arg(long)]
        key_id: String,
        /// File holding the secret signatures are checked with (not readable by others).
        #[arg(long, value_name = "PATH")]
        secret_key_file: PathBuf,
        /// Misbehave for the next requests: rate-limit, busy, 5xx, drop,
        /// drop-unapplied, slow:MS, hang, bad-credentials, quota, billing;
        /// `@Action` for one action, `*N` for N requests.
        #[arg(long = "fault", value_name = "FAULT")]
        faults: Vec<Fault>,
        /// Run the emulator's clock this many seconds off.
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        skew: i64,
        /// Accept images without checking that they hold a face.
        #[arg(long)]
        no_face_check: bool,
        /// JD success answer envelope: object, string or status.
        #[arg(long, default_value = "object")]
        jd_shape: JdShape,
        /// Print the banner as one JSON line ({"vendor", "endpoint", "ca"}).
        #[arg(long)]
        json: bool,
    },
    /// Enroll the sample photo with `enrolld` and upload it to a local JD
    /// emulator: no camera, no credentials.
    Demo {
        /// Photo to enroll [default: the sample photo shipped with rustface].
        #[arg(long)]
        photo: Option<PathBuf>,
        /// Person id to enroll under.
        #[arg(long, default_value = "demo-person")]
        person: String,
        /// The demo's queue, keys and config [default: ./enrolld-demo-state].
        #[arg(long, value_name = "DIR", default_value = "enrolld-demo-state")]
        state_dir: PathBuf,
        /// The enrolld binary to run [default: the one beside this program, else PATH].
        #[arg(long, value_name = "PATH")]
        enrolld: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // What it writes (keys, secrets, the demo's queue) is its user's alone;
    // the CA certificate is made readable on purpose.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    enrolld::service::logger::init(log::LevelFilter::Info);
    let result = match cli.command {
        Command::Serve {
            vendor,
            listen,
            ca_out,
            key_id,
            secret_key_file,
            faults,
            skew,
            no_face_check,
            jd_shape,
            json,
        } => enrolld::config::Secret::from_file(&secret_key_file)
            .and_then(|secret| {
                let config = EmulatorConfig {
                    vendor,
                    listen,
                    key_id,
                    secret: secret.expose().to_vec(),
                    faults,
                    skew_s: skew,
                    check_faces: !no_face_check,
                    jd_shape,
                    cert_not_before_ms: None,
                };
                serve(config, &ca_out, json)
            })
            .map(|()| 0),
        Command::Demo {
            photo,
            person,
            state_dir,
            enrolld,
        } => demo::run(&demo::DemoOptions {
            photo,
            person,
            state_dir,
            enrolld,
        }),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("enrolld-emulator: {message}");
            ExitCode::from(1)
        }
    }
}
