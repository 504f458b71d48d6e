//! The `enrolld` command. See README.md for the commands and exit codes.

#![forbid(unsafe_code)]

mod cli;

use clap::{Parser, Subcommand};
use cli::render::render;
use enrolld::capture::burst::{assess_frame, FrameReport};
use enrolld::capture::detect::SeetaDetector;
use enrolld::capture::encode::encode_for;
use enrolld::capture::enroll::{enroll, EnrollOutcome, EnrollRequest, Progress};
use enrolld::capture::frame::DecodeLimits;
use enrolld::capture::source::{FileSource, FrameSource};
use enrolld::clock::{Clock, SystemClock};
use enrolld::cloud::SkewClock;
use enrolld::config::{Config, ConfigOrigin, SourceSpec};
use enrolld::control::answer::{Answer, Event};
use enrolld::control::handler;
use enrolld::control::{Client, Reply, Request};
use enrolld::model::Provider;
use enrolld::model::{exit, ErrorCode, Failure};
use enrolld::queue::drain::DrainSummary;
use enrolld::queue::outbox::Outbox;
use enrolld::queue::seal::QueueKey;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const EXIT_CODES: &str = "Exit codes: 0 success; 1 runtime failure (storage, encoding); 2 usage or configuration error; \
3 rejected (no acceptable face); 4 queue or storage full; 5 camera or input image unreadable; 6 no such queue entry; \
drain: 7 some uploads failed and will be retried, 8 uploads paused until an operator acts, 9 the cloud refused some enrollments (dead); \
10 the daemon is busy with another enrollment; \
person forget: 0 deleted on the device and in the cloud, 7 the cloud delete is queued and will be retried, 11 an operator must delete faces by hand (JD).

Environment: ENROLLD_LOG=error|warn|info|debug|trace sets the log level on stderr (default: info for `run`, warn otherwise); HTTPS_PROXY / ALL_PROXY and NO_PROXY route uploads through a proxy (`config check` shows it); CREDENTIALS_DIRECTORY (systemd LoadCredential=) is where relative secret and key files are found; NOTIFY_SOCKET and WATCHDOG_USEC (systemd) are used by `run`.";

#[derive(Parser)]
#[command(name = "enrolld", version, about = "Edge face enrollment: camera -> best face -> durable queue -> cloud", after_help = EXIT_CODES)]
struct Cli {
    /// Configuration file [default: /etc/enrolld/enrolld.toml, built-in defaults if absent].
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Use this state directory instead of the configured `state_dir`
    /// (the command then works on it directly, never through a daemon).
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: control socket, button, LED, capture and uploads.
    Run,
    /// Show the running daemon's state (exit 1 when no daemon runs).
    Status,
    /// Find faces in image files, show the choice and its scores, optionally write the crops.
    Detect {
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
        /// Write the encoded crop of each accepted image here.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// Encode for this provider's limits [default: upload.provider].
        #[arg(long)]
        provider: Option<Provider>,
        /// Images worked on at once [default: one per core].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
        jobs: Option<u32>,
    },
    /// Capture, select, encode and queue one enrollment.
    Enroll {
        /// Person id: JD outerId (UTF-8 allowed) or Tencent PersonId
        /// (English letters, digits and -%@#&_, at most 64 bytes).
        #[arg(long)]
        person: String,
        /// Tencent PersonName (Chinese, English letters, digits, - and _,
        /// at most 60) [default: the person id with %@#& made _].
        #[arg(long)]
        name: Option<String>,
        /// Frame source [default: camera.source], e.g. file:/photo.jpg or v4l2:/dev/video0.
        #[arg(long)]
        source: Option<String>,
        /// Provider [default: upload.provider].
        #[arg(long)]
        provider: Option<Provider>,
        /// Frames in the burst, 1 to 100 [default: burst.frames].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        frames: Option<u32>,
        /// The person's consent, given before the photo: the signed form's
        /// number or the HR system's record (needed with consent.required).
        #[arg(long, value_name = "REF")]
        consent: Option<String>,
    },
    /// A person's data on this device and in the cloud.
    Person {
        #[command(subcommand)]
        command: PersonCommand,
    },
    /// What happened to each person: consent, queued, uploaded, dead,
    /// withdrawn, deleted (kept ledger.retention_days).
    Ledger {
        /// Only this person's records.
        #[arg(long, value_name = "ID")]
        person: Option<String>,
        /// Only records since this time: YYYY-MM-DD, an RFC 3339 time
        /// (2026-12-01T08:00:00Z) or Unix seconds.
        #[arg(long, value_name = "T", value_parser = parse_since)]
        since: Option<i64>,
    },
    /// Inspect and manage the outbox.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Upload every due enrollment, then print what happened.
    Drain,
    /// Create a device key for sealing queued images (never overwrites a file).
    Keygen {
        /// Where to write the key (created with mode 0600).
        #[arg(long, value_name = "PATH")]
        output: PathBuf,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// List every entry, oldest first.
    List,
    /// Show one entry.
    Show { id: u64 },
    /// Make an entry due now (a dead entry becomes pending).
    Retry { id: u64 },
    /// Show the receipts of uploaded enrollments (no images are kept).
    Receipts,
    /// Read back every entry, image, spool copy and receipt; report damage
    /// and the last rebuild of a damaged store (exit 1 if anything is damaged).
    Check,
    /// Delete an entry and its images, or every dead entry with --dead.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["id", "dead"])))]
    Purge {
        /// The entry to delete, with its images.
        id: Option<u64>,
        /// Delete every dead entry instead.
        #[arg(long)]
        dead: bool,
    },
}

#[derive(Subcommand)]
enum PersonCommand {
    /// The person withdrew consent: destroy every queued entry and image of
    /// theirs on this device now, then delete what this device uploaded in
    /// the cloud (Tencent DeletePerson / DeleteFace; JD: by hand).
    Forget {
        /// The person id they were enrolled under.
        id: String,
    },
}

/// `--since`: YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ, or Unix seconds, as Unix ms.
fn parse_since(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs.saturating_mul(1000));
    }
    let bad = || format!("{s:?}: expected YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or Unix seconds");
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00Z"));
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.trim_end_matches('Z').split(':').collect();
    if d.len() != 3 || t.len() != 3 || !time.ends_with('Z') {
        return Err(bad());
    }
    let num = |v: &str, max: u32| v.parse::<u32>().ok().filter(|n| *n <= max).ok_or_else(bad);
    let (y, m, day) = (
        d[0].parse::<i64>().map_err(|_| bad())?,
        num(d[1], 12)?,
        num(d[2], 31)?,
    );
    let (h, min, sec) = (num(t[0], 23)?, num(t[1], 59)?, num(t[2], 60)?);
    if m == 0 || day == 0 {
        return Err(bad());
    }
    let days = enrolld::clock::days_from_civil(y, m, day);
    Ok(((days * 86_400) + i64::from(h * 3600 + min * 60 + sec)) * 1000)
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print it with identifiers masked.
    Check,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    // Files enrolld makes (the queue, crops, keys, metrics) are its user's
    // alone, as under the unit's UMask=0077; the socket's mode is set apart.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    enrolld::capture::frame::return_large_buffers_to_the_system();
    // The daemon reports what it does in its journal; a command only its
    // problems. `drain` tells its whole story itself, one line per entry as
    // it goes, then the summary (pauses, failures, next attempt), exactly as
    // through a daemon: its log would say it twice.
    let level = match cli.command {
        Command::Run => log::LevelFilter::Info,
        Command::Drain => log::LevelFilter::Off,
        _ => log::LevelFilter::Warn,
    };
    enrolld::service::logger::init(level);
    let json = cli.json;
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            if json {
                println!(
                    "{}",
                    cli::json::line(&cli::json::ErrorLine {
                        error: f.code,
                        message: &f.message
                    })
                );
            } else {
                eprintln!("enrolld: {}", f.message);
            }
            ExitCode::from(f.exit())
        }
    }
}

/// A command line clap refuses: with `--json` anywhere in it, the error is
/// on stdout as JSON like every other error; `--help` and `--version` print
/// as usual.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || !std::env::args_os().any(|a| a == "--json")
    {
        let _ = e.print();
        return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(exit::USAGE));
    }
    let text = e.render().to_string();
    let message = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .map(|l| l.trim_start_matches("error: "))
        .fold(String::new(), |mut m, l| {
            if !m.is_empty() {
                m.push_str(if m.ends_with(':') { " " } else { "; " });
            }
            m.push_str(l);
            m
        });
    println!(
        "{}",
        cli::json::line(&cli::json::ErrorLine {
            error: ErrorCode::Usage,
            message: &message
        })
    );
    ExitCode::from(exit::USAGE)
}

fn load_config(cli: &Cli) -> Result<(Config, ConfigOrigin), Failure> {
    let (mut cfg, origin) = Config::load(cli.config.as_deref())
        .map_err(|e| Failure::new(ErrorCode::ConfigInvalid, e.to_string()))?;
    if let Some(dir) = &cli.state_dir {
        cfg.state_dir = dir.clone();
    }
    Ok((cfg, origin))
}

fn open_outbox(cfg: &Config) -> Result<Outbox, Failure> {
    enrolld::queue::open(cfg, Arc::new(SystemClock))
}

fn detector(cfg: &Config) -> Result<SeetaDetector, Failure> {
    SeetaDetector::new(&cfg.detect)
        .map_err(|e| Failure::new(ErrorCode::ModelInvalid, e.to_string()))
}

fn run(cli: Cli) -> Result<u8, Failure> {
    let (cfg, origin) = load_config(&cli)?;
    match &cli.command {
        Command::Config {
            command: ConfigCommand::Check,
        } => config_check(&cfg, &origin, cli.json),
        Command::Detect {
            images,
            out_dir,
            provider,
            jobs,
        } => detect_images(
            &cfg,
            images,
            out_dir.as_deref(),
            provider.unwrap_or(cfg.upload.provider),
            jobs.map(|j| j as usize),
            cli.json,
        ),
        Command::Run => enrolld::service::daemon::run(cli.config.clone(), cfg)
            .map(|()| exit::OK)
            .map_err(|e| Failure::new(e.code(), e.to_string())),
        Command::Status => {
            if let Some(answer) = daemon_answer(&cli, &cfg, &Request::Status {}, None) {
                return Ok(render(&answer?, &cfg, cli.json));
            }
            let outbox = match open_outbox(&cfg) {
                Ok(o) => o,
                Err(f) => {
                    // No daemon is the answer; the queue is a detail.
                    if cli.json {
                        println!(
                            "{}",
                            cli::json::line(&cli::json::StatusUnreadable {
                                daemon: "not running",
                                error: ErrorCode::NotRunning,
                                message: cli::render::not_running(&cfg),
                                queue_error: cli::json::ErrorLine {
                                    error: f.code,
                                    message: &f.message
                                },
                            })
                        );
                    } else {
                        println!(
                            "daemon: not running ({} does not answer)",
                            cfg.control.socket.display()
                        );
                        println!("queue: cannot be read: {}", f.message);
                    }
                    return Ok(exit::FAILURE);
                }
            };
            let answer = Answer::Status(Box::new(handler::status(&outbox, &cfg.state_dir)));
            Ok(render(&answer, &cfg, cli.json))
        }
        Command::Enroll {
            person,
            name,
            source,
            provider,
            frames,
            consent,
        } => {
            // The vendor's rules first: nothing it would refuse is captured,
            // queued or sent to the daemon.
            provider
                .unwrap_or(cfg.upload.provider)
                .check_person(person, name.as_deref())
                .map_err(|e| Failure::new(e.code(), e.to_string()))?;
            let source = source
                .as_deref()
                .map(SourceSpec::parse)
                .transpose()
                .map_err(|e| Failure::new(ErrorCode::InvalidSource, e))?;
            // A running daemon owns the camera and the queue, so it is asked
            // first: for the camera (no --source), or for one photo file,
            // which this command opens and passes to it.
            let photo = match &source {
                Some(SourceSpec::File(path)) => open_photo(path).map(|f| (path, f)),
                _ => None,
            };
            if source.is_none() || photo.is_some() {
                let req = Request::Enroll {
                    person: person.clone(),
                    name: name.clone(),
                    provider: *provider,
                    frames: *frames,
                    follow_upload: false,
                    photo: photo.as_ref().map(|(p, _)| p.display().to_string()),
                    consent: consent.clone(),
                    peer_uid: None,
                };
                let file = photo.as_ref().map(|(_, f)| f);
                if let Some(answer) = daemon_answer(&cli, &cfg, &req, file) {
                    return Ok(render(&answer?, &cfg, cli.json));
                }
            }
            let source = match source {
                Some(s) => s,
                None => cfg.camera.source.clone(),
            };
            // A missing photo, a device or a FIFO is named as such, before
            // the queue (which a running daemon holds) is opened.
            if let SourceSpec::File(path) = &source {
                FileSource::open(path, DecodeLimits::default())?;
            }
            let req = EnrollRequest {
                person_id: person.clone(),
                person_name: name.clone(),
                provider: provider.unwrap_or(cfg.upload.provider),
                source,
                frames: *frames,
                consent: consent
                    .clone()
                    .map(|reference| enrolld::model::ConsentGiven {
                        reference,
                        via: enrolld::model::ConsentVia::CommandLine {
                            uid: rustix::process::getuid().as_raw(),
                        },
                    }),
            };
            run_enroll(&cfg, &req, cli.json)
        }
        Command::Queue { command } => {
            let req = queue_request(command);
            match daemon_answer(&cli, &cfg, &req, None) {
                Some(answer) => Ok(render(&answer?, &cfg, cli.json)),
                None => local_queue(&cfg, &req, cli.json),
            }
        }
        Command::Drain => {
            let answer = match daemon_answer(&cli, &cfg, &Request::Drain {}, None) {
                Some(answer) => answer?,
                None => {
                    let outbox = Arc::new(open_outbox(&cfg)?);
                    Answer::Drained(Box::new(run_drain(&cfg, outbox, cli.json)?))
                }
            };
            Ok(render(&answer, &cfg, cli.json))
        }
        Command::Keygen { output } => keygen(output, cli.json),
        Command::Ledger { person, since } => {
            let req = Request::Ledger {
                person: person.clone(),
                since_ms: *since,
            };
            match daemon_answer(&cli, &cfg, &req, None) {
                Some(answer) => Ok(render(&answer?, &cfg, cli.json)),
                None => local_queue(&cfg, &req, cli.json),
            }
        }
        Command::Person {
            command: PersonCommand::Forget { id },
        } => forget(&cli, &cfg, id),
    }
}

/// `person forget`: the withdrawal on the device (daemon or queue), then a
/// drain pass that sends the deletes, then what the ledger says became of
/// each vendor's delete. The same steps and output with or without a daemon.
fn forget(cli: &Cli, cfg: &Config, person: &str) -> Result<u8, Failure> {
    let started = SystemClock.now_ms() - 1_000;
    let req = Request::Forget {
        person: person.to_string(),
    };
    let ask = |req: &Request| -> Result<Answer, Failure> {
        match daemon_answer(cli, cfg, req, None) {
            Some(answer) => answer,
            None => {
                let outbox = open_outbox(cfg)?;
                handler::handle(&outbox, cfg, req).unwrap_or_else(|| {
                    Err(Failure::new(ErrorCode::Internal, "not a queue request"))
                })
            }
        }
    };
    let Answer::Forgotten(report) = ask(&req)? else {
        return Err(Failure::new(
            ErrorCode::Internal,
            "forget: unexpected answer",
        ));
    };
    if !report.cloud.is_empty() {
        // The deletes go through the drain, with its retries and pauses;
        // what it could not do now it does later.
        let drained = match daemon_answer(cli, cfg, &Request::Drain {}, None) {
            Some(answer) => answer.map(|_| ()),
            None => {
                open_outbox(cfg).and_then(|o| run_drain(cfg, Arc::new(o), cli.json).map(|_| ()))
            }
        };
        if let Err(f) = drained {
            log::warn!("person forget: the drain pass failed: {}", f.message);
        }
    }
    let Answer::Ledger(ledger) = ask(&Request::Ledger {
        person: Some(person.to_string()),
        since_ms: Some(started),
    })?
    else {
        return Err(Failure::new(
            ErrorCode::Internal,
            "forget: unexpected answer",
        ));
    };
    let outcome = cli::render::forget_outcome(*report, &ledger);
    Ok(cli::render::render_forget(&outcome, cli.json))
}

fn config_check(cfg: &Config, origin: &ConfigOrigin, json: bool) -> Result<u8, Failure> {
    let from = match origin {
        ConfigOrigin::File(p) => p.display().to_string(),
        ConfigOrigin::Defaults => "built-in defaults (no config file)".into(),
    };
    // The one verdict that `run` also starts on.
    enrolld::service::preflight::check(cfg, Path::new(&from))
        .map_err(|e| Failure::new(ErrorCode::ConfigInvalid, e.to_string()))?;
    let proxy = enrolld::cloud::http::proxy_from_env();
    if json {
        let effective: toml::Value =
            toml::from_str(&cfg.to_masked_toml()).unwrap_or(toml::Value::Table(Default::default()));
        println!(
            "{}",
            cli::json::line(&cli::json::ConfigVerdict {
                source: &from,
                valid: true,
                proxy: &proxy,
                config: effective,
            })
        );
    } else {
        println!("# configuration from {from}: valid (`enrolld run` starts on it)");
        match &proxy {
            Some(p) => println!(
                "# uploads go through the proxy {} (from {}){}",
                p.url,
                p.variable,
                p.no_proxy
                    .as_ref()
                    .map_or(String::new(), |n| format!("; not for NO_PROXY={n}"))
            ),
            None => println!("# uploads connect directly (no HTTPS_PROXY or ALL_PROXY set)"),
        }
        print!("{}", cfg.to_masked_toml());
    }
    Ok(exit::OK)
}

fn describe_report(r: &FrameReport) -> String {
    let mut s = format!("{} face(s)", r.faces_seen);
    if let (Some(face), Some(sc)) = (r.chosen, r.scores) {
        s.push_str(&format!(
            "; largest {}x{} at ({},{}): size {} px, brightness {:.0}, contrast {:.0}, sharpness {:.0}, score {:.0}",
            face.width, face.height, face.x, face.y, sc.face_px, sc.brightness, sc.contrast, sc.sharpness, sc.overall
        ));
    }
    match r.rejection {
        None => s.push_str(": accepted"),
        Some(rej) => s.push_str(&format!(": rejected: {rej} ({})", rej.advice())),
    }
    s
}

/// What `detect` found in one image: its text line, its JSON, and whether it
/// was unreadable or rejected.
struct Detected {
    line: String,
    json: cli::json::Detection,
    unreadable: bool,
    rejected: bool,
}

/// Decodes, detects and (with `out_dir`) encodes one image.
fn detect_one(
    cfg: &Config,
    det: &mut SeetaDetector,
    path: &Path,
    out_dir: Option<&Path>,
    provider: Provider,
) -> Result<Detected, Failure> {
    let frame = FileSource::open(path, DecodeLimits::default()).and_then(|mut s| {
        s.next_frame().and_then(|f| {
            f.ok_or(enrolld::capture::source::SourceError::Empty {
                what: path.display().to_string(),
            })
        })
    });
    let frame = match frame {
        Ok(f) => f,
        Err(e) => {
            return Ok(Detected {
                line: format!("{}: error: {}: {e}", path.display(), e.code()),
                json: cli::json::Detection::Unreadable {
                    image: path.to_path_buf(),
                    error: e.code(),
                    message: e.to_string(),
                },
                unreadable: true,
                rejected: false,
            })
        }
    };
    let (report, candidate) = assess_frame(&frame, det, &cfg.quality, None);
    drop(frame);
    let mut output = None;
    if let (Some(dir), Some(c)) = (out_dir, &candidate) {
        let enc = encode_for(&c.crop, &provider.limits(), &cfg.encode)
            .map_err(|e| Failure::new(ErrorCode::EncodeFailed, e.to_string()))?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let out = dir.join(format!("{stem}.face.jpg"));
        std::fs::write(&out, &enc.bytes).map_err(|e| {
            Failure::new(ErrorCode::OutputFailed, format!("{}: {e}", out.display()))
        })?;
        output = Some((out, enc));
    }
    let mut line = format!("{}: {}", path.display(), describe_report(&report));
    if let Some((p, e)) = &output {
        line.push_str(&format!(
            " -> {} ({}x{}, {} bytes, JPEG q{})",
            p.display(),
            e.width,
            e.height,
            e.len,
            e.quality
        ));
    }
    let rejected = !report.accepted;
    Ok(Detected {
        line,
        json: cli::json::Detection::Judged {
            image: path.to_path_buf(),
            advice: report.rejection.map(|r| r.advice()),
            report: Box::new(report),
            output: output.map(|(path, image)| cli::json::DetectOutput { path, image }),
        },
        unreadable: false,
        rejected,
    })
}

/// `enrolld detect`: the images are shared out to one worker per core, each
/// with its own detector; results are printed in the order of the command
/// line as soon as each one's turn comes.
fn detect_images(
    cfg: &Config,
    images: &[PathBuf],
    out_dir: Option<&Path>,
    provider: Provider,
    jobs: Option<usize>,
    json: bool,
) -> Result<u8, Failure> {
    // A broken model is reported once, before any work.
    drop(detector(cfg)?);
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            Failure::new(ErrorCode::OutputFailed, format!("{}: {e}", dir.display()))
        })?;
    }
    let workers = jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, images.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<Detected, Failure>)>();
    let mut results = Vec::new();
    let (mut rejected, mut unreadable) = (false, false);
    let mut failure = None;
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (tx, next) = (tx.clone(), &next);
            scope.spawn(move || {
                let mut det = match detector(cfg) {
                    Ok(d) => d,
                    Err(f) => {
                        // Out of turn: reported after the others.
                        next.fetch_add(images.len(), Ordering::SeqCst);
                        let _ = tx.send((usize::MAX, Err(f)));
                        return;
                    }
                };
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(path) = images.get(i) else { return };
                    let result = detect_one(cfg, &mut det, path, out_dir, provider);
                    let failed = result.is_err();
                    if tx.send((i, result)).is_err() || failed {
                        // An output failure stops this worker; the others
                        // stop at the next image.
                        next.fetch_add(images.len(), Ordering::SeqCst);
                        return;
                    }
                }
            });
        }
        drop(tx);
        // In command-line order: a result waits here until its turn.
        let mut waiting = std::collections::BTreeMap::new();
        let mut turn = 0;
        for (i, result) in rx {
            waiting.insert(i, result);
            while let Some(result) = waiting.remove(&turn) {
                turn += 1;
                match result {
                    Ok(d) => {
                        unreadable |= d.unreadable;
                        rejected |= d.rejected;
                        if json {
                            results.push(d.json);
                        } else {
                            println!("{}", d.line);
                        }
                    }
                    Err(f) => {
                        failure.get_or_insert(f);
                    }
                }
            }
        }
        // Results left out of turn (after a worker stopped): only failures matter.
        for (_, result) in waiting {
            if let Err(f) = result {
                failure.get_or_insert(f);
            }
        }
    });
    if let Some(f) = failure {
        return Err(f);
    }
    if json {
        println!("{}", cli::json::line(&results));
    }
    Ok(if unreadable {
        exit::INPUT
    } else if rejected {
        exit::REJECTED
    } else {
        exit::OK
    })
}

/// The progress line of a daemon's event, as the command prints its own
/// progress; `None` for events the last line covers.
fn progress_line(event: &Event) -> Option<String> {
    event.progress().map(|p| describe_progress(&p))
}

/// One line of enrollment progress.
fn describe_progress(p: &Progress) -> String {
    match p {
        Progress::Capturing { source } => format!("capturing from {source}"),
        Progress::Frame { report } => {
            format!("  frame {}: {}", report.index, describe_report(report))
        }
    }
}

fn run_enroll(cfg: &Config, req: &EnrollRequest, json: bool) -> Result<u8, Failure> {
    let mut det = detector(cfg)?;
    let outbox = open_outbox(cfg)?;
    let not_cancelled = std::sync::atomic::AtomicBool::new(false);
    let outcome = enroll(cfg, &mut det, &outbox, req, &not_cancelled, &mut |p| {
        if json {
            return;
        }
        eprintln!("{}", describe_progress(&p));
    })?;
    match Answer::of_enrollment(outcome) {
        // As a daemon reports it: the reason and what to do, exit 3; with
        // --json the whole outcome, with every frame's report, for scripts.
        Answer::Rejected(outcome) if !json => match *outcome {
            EnrollOutcome::Rejected { reason, advice, .. } => Err(Failure::new(
                ErrorCode::Rejected,
                format!("{reason}: {advice}"),
            )),
            EnrollOutcome::Queued { .. } => Ok(exit::OK),
        },
        answer => Ok(render(&answer, cfg, json)),
    }
}

/// Opens a photo to pass to a running daemon: a regular file only (a
/// directory, or anything that fails to open, is enrolled without a daemon,
/// which reports the problem).
fn open_photo(path: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .ok()?;
    file.metadata().ok()?.is_file().then_some(file)
}

/// The request of a queue command.
fn queue_request(cmd: &QueueCommand) -> Request {
    match cmd {
        QueueCommand::List => Request::QueueList {},
        QueueCommand::Show { id } => Request::QueueShow { id: *id },
        QueueCommand::Retry { id } => Request::Retry { id: *id },
        QueueCommand::Purge { id, dead } => Request::Purge {
            id: *id,
            dead: *dead,
        },
        QueueCommand::Receipts => Request::QueueReceipts {},
        QueueCommand::Check => Request::QueueCheck {},
    }
}

/// Asks the running daemon; `None` when none answers. Progress events go
/// to stderr (not with `--json`: stdout carries one JSON document).
/// The running daemon's answer, or `None` when this command works on the
/// queue itself: no daemon answers, or `--state-dir` names a queue of its
/// own (the daemon answers for its state_dir only; if it holds that one, the
/// queue says so: queue_locked).
fn daemon_answer(
    cli: &Cli,
    cfg: &Config,
    req: &Request,
    photo: Option<&std::fs::File>,
) -> Option<Result<Answer, Failure>> {
    if cli.state_dir.is_some() {
        return None;
    }
    let json = cli.json;
    // A drain pass uploads everything due, at the vendors' rate limits.
    let timeout = match req {
        Request::Drain {} => std::time::Duration::from_secs(3600),
        _ => std::time::Duration::from_secs(120),
    };
    let unreachable = |e: &dyn std::fmt::Display| {
        Failure::new(
            ErrorCode::DaemonUnreachable,
            format!("{}: {e}", cfg.control.socket.display()),
        )
    };
    // The daemon answers these from its main loop at once, and an
    // enrollment's first event is `capturing`: a daemon that says nothing
    // for this long is stopped or hung. A drain answers when its pass ends;
    // a queue check reads back every image.
    let first_line = match req {
        Request::Drain {} | Request::QueueCheck {} => timeout,
        _ => std::time::Duration::from_secs(15),
    };
    let mut client = match Client::connect(&cfg.control.socket, timeout) {
        Ok(Some(c)) => c.first_line_within(first_line),
        Ok(None) => return None,
        Err(e) => return Some(Err(unreachable(&e))),
    };
    let mut rejected: Option<Box<EnrollOutcome>> = None;
    let last = client.call_with(req, photo, &mut |reply| {
        if let Reply::Event(event) = reply {
            match event {
                Event::Rejected { outcome, .. } => rejected = Some(outcome.clone()),
                Event::DrainEntry(r) => eprintln!("{}", cli::render::entry_report(r, json)),
                _ => {}
            }
            if !json {
                if let Some(line) = progress_line(event) {
                    eprintln!("{line}");
                }
            }
        }
    });
    Some(match last {
        Err(e) => Err(unreachable(&e)),
        // A rejection prints as it does without a daemon: the whole
        // outcome with --json, exit 3.
        Ok(Reply::Error {
            code: ErrorCode::Rejected,
            message,
        }) if json => match rejected.take() {
            Some(outcome) => Ok(Answer::Rejected(outcome)),
            None => Err(Failure::new(ErrorCode::Rejected, message)),
        },
        Ok(Reply::Answer { result }) => Ok(result),
        Ok(Reply::Error { code, message }) => Err(Failure::new(code, message)),
        Ok(Reply::Event(_)) => Err(unreachable(&"the answer ended early")),
    })
}

/// Runs one drain pass over the outbox with uploaders built from `cfg`.
fn run_drain(cfg: &Config, outbox: Arc<Outbox>, json: bool) -> Result<DrainSummary, Failure> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let skew = Arc::new(SkewClock::new(clock.clone()));
    let mut drainer = enrolld::service::uploads::build_drainer(cfg, outbox, clock, skew);
    // One line per entry as it happens, as a daemon's drain streams them.
    drainer.set_observer(Box::new(move |r| {
        eprintln!("{}", cli::render::entry_report(r, json))
    }));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(signal, stop.clone());
    }
    let summary = drainer.drain(&mut |d| {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(d.min(std::time::Duration::from_secs(1)));
        !stop.load(std::sync::atomic::Ordering::SeqCst)
    })?;
    Ok(summary)
}

fn keygen(output: &Path, json: bool) -> Result<u8, Failure> {
    let (_, hex) = QueueKey::generate();
    let mut line = zeroize::Zeroizing::new(hex.as_bytes().to_vec());
    line.push(b'\n');
    enrolld::trust::write_new_private(output, &line).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::AlreadyExists {
            "exists; a key is never overwritten (the queue it seals would be lost)".to_string()
        } else {
            e.to_string()
        };
        Failure::new(
            ErrorCode::KeygenFailed,
            format!("{}: {why}", output.display()),
        )
    })?;
    if json {
        println!(
            "{}",
            cli::json::line(&cli::json::KeyWritten { key_file: output })
        );
    } else {
        println!(
            "wrote a new queue key to {} (mode 0600); back it up: without it the queue cannot be read",
            output.display()
        );
    }
    Ok(exit::OK)
}

/// Answers a queue request from the queue itself (no daemon runs) and prints it.
fn local_queue(cfg: &Config, req: &Request, json: bool) -> Result<u8, Failure> {
    let outbox = open_outbox(cfg)?;
    match handler::handle(&outbox, cfg, req) {
        Some(answer) => Ok(render(&answer?, cfg, json)),
        None => Err(Failure::new(ErrorCode::Internal, "not a queue request")),
    }
}
