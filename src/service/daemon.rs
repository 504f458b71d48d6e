//! `enrolld run`: the long-running daemon.
//!
//! One main loop owns the state and reads one bounded channel of events.
//! Blocking work lives on named threads:
//! - `capture`: one enrollment at a time (camera, detector, encoder, outbox);
//! - `drain`: uploads, woken by new enrollments and by due retries;
//! - `control`: the Unix socket ([`crate::control::server`]), one
//!   short-lived thread per client;
//! - `button`: the input device;
//! - `led`: blink patterns.
//!
//! systemd: READY=1 once the socket is bound and the outbox is open;
//! STATUS= with queue depth and last result; WATCHDOG=1 from the main loop
//! only while every worker thread is alive. SIGTERM stops taking triggers,
//! cancels a capture, gives an upload in progress a bounded time, and exits 0.
//! SIGHUP reloads the configuration, keeping the old one if the new is invalid.

use crate::capture::detect::SeetaDetector;
use crate::capture::enroll::{enroll, EnrollError, EnrollOutcome, EnrollRequest};
use crate::clock::{Clock, Stop, SystemClock, SystemTimer, Timer};
use crate::cloud::SkewClock;
use crate::config::{Config, ReceivedPhoto, SourceSpec};
use crate::control::answer::{self, Answer, Armed, DaemonState, StatusReport};
use crate::control::handler;
use crate::control::server::{bind_socket, control_worker, Clients, Submit};
use crate::control::{Reply, Request};
use crate::model::EntryState;
use crate::model::{ErrorCode, Failure};
use crate::queue::drain::DrainSummary;
use crate::queue::outbox::Outbox;
use crate::queue::retry::{next_pass_at, PassEnd};
use crate::service::deadlines::{wait_for_first, wait_for_workers, ArmedPerson, SHUTDOWN_GRACE};
use crate::service::hardware::{
    run_led, sysfs_root, watch_button, watch_gpio_button, GpioLed, Led, LedHandle, LedOutput,
    LedPattern,
};
use crate::service::notify::{watchdog_interval, Notifier};
use crate::service::state::{on_press, DrainClients, Fate, Followed, Press};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The metrics file is rewritten at least this often (ages move on).
const METRICS_EVERY: Duration = Duration::from_secs(15);

/// What the main loop reacts to.
enum Event {
    /// A request, the photo file passed with it, and where replies go.
    Client(Request, Option<std::fs::File>, SyncSender<Reply>),
    Button,
    EnrollFinished {
        queued: Option<u64>,
        result: String,
        /// A `follow_upload` client to answer once the upload is confirmed.
        follower: Option<SyncSender<Reply>>,
    },
    /// A drain pass ended; it served the `drain` requests up to this ticket.
    Drained(DrainSummary, u64),
    /// A drain pass could not read the queue.
    DrainFailed(crate::model::Failure, u64),
    /// What became of one entry in a drain pass, as it happened.
    DrainEntry(crate::queue::drain::EntryReport),
    /// The wall clock was set: the drain's schedule is redone.
    ClockStepped,
    /// SIGTERM or SIGINT.
    Stop,
    /// SIGHUP: reload the configuration.
    Reload,
}

/// One enrollment for the capture thread.
struct CaptureJob {
    config: Arc<Config>,
    request: EnrollRequest,
    reply: Option<SyncSender<Reply>>,
    follow_upload: bool,
}

/// What starts an enrollment: a client's request or a button press.
struct Trigger {
    person: String,
    name: Option<String>,
    provider: Option<crate::model::Provider>,
    frames: Option<u32>,
    /// A photo the client passed; none enrolls from the camera.
    photo: Option<ReceivedPhoto>,
    consent: Option<crate::model::ConsentGiven>,
}

/// What the drain thread is told.
enum DrainCmd {
    Wake,
    /// The wall clock was set: schedules made in the old time are redone.
    ClockStepped,
    /// An operator asked for a pass (`drain`): paused providers are tried
    /// again, since the operator may have fixed what paused them.
    Resume,
    Reload(Arc<Config>),
}

/// Why the daemon could not start.
#[derive(Debug)]
pub enum DaemonError {
    /// The configuration or a file it names would not work (the same
    /// verdict as `enrolld config check`).
    Config(crate::config::ConfigError),
    /// The signal handlers could not be installed.
    Signals(std::io::Error),
    /// The queue key or the queue itself.
    Queue(Failure),
    /// The control socket could not be bound.
    Socket(std::io::Error),
    /// A worker thread could not be started.
    Thread(&'static str, std::io::Error),
}

impl DaemonError {
    /// The error code, and through it the exit status of `enrolld run`.
    pub fn code(&self) -> ErrorCode {
        match self {
            DaemonError::Queue(f) => f.code,
            DaemonError::Config(_) => ErrorCode::ConfigInvalid,
            // A path that is not a socket, or not absolute: the config.
            DaemonError::Socket(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidInput | std::io::ErrorKind::AlreadyExists
                ) =>
            {
                ErrorCode::ConfigInvalid
            }
            _ => ErrorCode::DaemonFailed,
        }
    }
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonError::Config(e) => {
                write!(f, "not starting: {}", e.to_string().replace('\n', "\n  "))
            }
            DaemonError::Signals(e) => write!(f, "signals: {e}"),
            DaemonError::Queue(e) => write!(f, "outbox: {e}"),
            DaemonError::Socket(e) => write!(f, "control socket: {e}"),
            DaemonError::Thread(name, e) => write!(f, "{name} thread: {e}"),
        }
    }
}

impl std::error::Error for DaemonError {}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(config_path: Option<PathBuf>, config: Config) -> Result<(), DaemonError> {
    crate::service::preflight::check(&config, &config_source(config_path.as_deref()))
        .map_err(DaemonError::Config)?;
    let config = Arc::new(config);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let timer: Arc<dyn Timer> = Arc::new(SystemTimer::new());
    let stop = Arc::new(Stop::new());
    let (events_tx, events_rx) = mpsc::sync_channel::<Event>(64);
    // Signals first: a SIGTERM during start-up is an event like any other.
    watch_signals(events_tx.clone())?;
    let outbox = Arc::new(crate::queue::open(&config, clock.clone()).map_err(DaemonError::Queue)?);
    let salvage = outbox.last_salvage();
    let (listener, bound) = bind_socket(&config.control.socket).map_err(DaemonError::Socket)?;
    let mut crew = Crew::new();
    let led = spawn_led(&config, &mut crew)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let capture_tx = spawn_capture(&mut crew, &outbox, &events_tx, &cancel, &led)?;
    let skew = Arc::new(SkewClock::new(clock.clone()));
    let drain_asked = Arc::new(AtomicU64::new(0));
    let drain_tx = spawn_drain(
        &mut crew,
        DrainParts {
            config: config.clone(),
            outbox: outbox.clone(),
            clock,
            skew: skew.clone(),
            asked: drain_asked.clone(),
            stop: stop.clone(),
        },
        &events_tx,
    )?;
    let clients = spawn_control(&mut crew, listener, &config, &events_tx, &stop)?;
    spawn_button(&mut crew, &config, &events_tx, &stop)?;
    drop(events_tx);

    let mut daemon = Daemon {
        config,
        config_path,
        outbox,
        notifier: Notifier::from_env(),
        capture_tx,
        drain_tx,
        drain_asked,
        drain_clients: DrainClients::default(),
        cancel,
        led,
        skew,
        busy: false,
        timer: timer.clone(),
        armed: None,
        last_result: "none yet".into(),
        last_drain: None,
        followers: Followed::default(),
        status_line: String::new(),
        counters: crate::service::metrics::Counters {
            salvage_lost: salvage.as_ref().map_or(0, |r| r.lost.len() as u64),
            ..crate::service::metrics::Counters::default()
        },
        metrics_written: None,
    };
    daemon.ready();
    daemon.main_loop(&events_rx, &crew.workers);
    stop.set();
    daemon.shutdown(crew, events_rx, timer.as_ref());
    // Let client threads write what they were given (at most a second).
    clients.wait_idle(Duration::from_secs(1));
    if let Some(bound) = bound {
        bound.remove();
    }
    log::info!("enrolld stopped");
    Ok(())
}

/// The daemon's threads, and the names they say as they end.
struct Crew {
    workers: Vec<(&'static str, JoinHandle<()>)>,
    ended_tx: mpsc::Sender<&'static str>,
    ended: Receiver<&'static str>,
}

/// Says a worker's name when it ends, however it ends.
struct SaysEnded(mpsc::Sender<&'static str>, &'static str);

impl Drop for SaysEnded {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

impl Crew {
    fn new() -> Self {
        let (ended_tx, ended) = mpsc::channel();
        Self {
            workers: Vec::new(),
            ended_tx,
            ended,
        }
    }

    fn spawn(
        &mut self,
        name: &'static str,
        f: impl FnOnce() + Send + 'static,
    ) -> Result<(), DaemonError> {
        let says = SaysEnded(self.ended_tx.clone(), name);
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _says = says;
                f()
            })
            .map_err(|e| DaemonError::Thread(name, e))?;
        self.workers.push((name, handle));
        Ok(())
    }
}

/// SIGTERM and SIGINT stop the daemon, SIGHUP reloads its configuration:
/// each arrives in the main loop as an event.
fn watch_signals(events: SyncSender<Event>) -> Result<(), DaemonError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(DaemonError::Signals)?;
    // Detached: it blocks until a signal and holds nothing to shut down.
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let event = if signal == SIGHUP {
                    Event::Reload
                } else {
                    Event::Stop
                };
                if events.send(event).is_err() {
                    return;
                }
            }
        })
        .map(drop)
        .map_err(|e| DaemonError::Thread("signals", e))
}

/// The LED's thread, if an LED is configured and can be opened.
fn spawn_led(config: &Config, crew: &mut Crew) -> Result<LedHandle, DaemonError> {
    let output: Option<Box<dyn LedOutput>> = if !config.led.name.is_empty() {
        match Led::new(&sysfs_root(), &config.led.name) {
            Ok(l) => Some(Box::new(l)),
            Err(e) => {
                log::error!("led {}: {e}; running without it", config.led.name);
                None
            }
        }
    } else if !config.led.gpio_chip.as_os_str().is_empty() {
        match GpioLed::new(&config.led.gpio_chip, config.led.gpio_line) {
            Ok(l) => Some(Box::new(l)),
            Err(e) => {
                log::error!("led {e}; running without it");
                None
            }
        }
    } else {
        None
    };
    let Some(output) = output else {
        return Ok(LedHandle::default());
    };
    let (tx, rx) = mpsc::sync_channel(8);
    crew.spawn("led", move || run_led(output.as_ref(), &rx))?;
    Ok(LedHandle::new(tx))
}

fn spawn_capture(
    crew: &mut Crew,
    outbox: &Arc<Outbox>,
    events: &SyncSender<Event>,
    cancel: &Arc<AtomicBool>,
    led: &LedHandle,
) -> Result<SyncSender<CaptureJob>, DaemonError> {
    let (capture_tx, capture_rx) = mpsc::sync_channel::<CaptureJob>(1);
    let (outbox, events, cancel, led) =
        (outbox.clone(), events.clone(), cancel.clone(), led.clone());
    crew.spawn("capture", move || {
        capture_worker(&capture_rx, &outbox, &events, &cancel, &led)
    })?;
    Ok(capture_tx)
}

/// What the drain thread works with.
struct DrainParts {
    config: Arc<Config>,
    outbox: Arc<Outbox>,
    clock: Arc<dyn Clock>,
    skew: Arc<SkewClock>,
    /// The last `drain` ticket handed out (see [`Event::Drained`]).
    asked: Arc<AtomicU64>,
    stop: Arc<Stop>,
}

fn spawn_drain(
    crew: &mut Crew,
    parts: DrainParts,
    events: &SyncSender<Event>,
) -> Result<SyncSender<DrainCmd>, DaemonError> {
    let (drain_tx, drain_rx) = mpsc::sync_channel::<DrainCmd>(8);
    {
        // Detached: it blocks until the clock is set and holds nothing that
        // needs shutting down. It tells the main loop, which tells the
        // drain thread: the main loop holds the only sender of its
        // commands, so the drain thread ends when the main loop lets go.
        let events = events.clone();
        std::thread::Builder::new()
            .name("clock-watch".into())
            .spawn(move || watch_clock_steps(&events))
            .map_err(|e| DaemonError::Thread("clock-watch", e))?;
    }
    let events = events.clone();
    crew.spawn("drain", move || drain_worker(parts, &drain_rx, &events))?;
    Ok(drain_tx)
}

fn spawn_control(
    crew: &mut Crew,
    listener: std::os::unix::net::UnixListener,
    config: &Arc<Config>,
    events: &SyncSender<Event>,
    stop: &Arc<Stop>,
) -> Result<Arc<Clients>, DaemonError> {
    let clients = Arc::new(Clients::default());
    let (events, stop, config, active) = (
        events.clone(),
        stop.clone(),
        config.clone(),
        clients.clone(),
    );
    let submit: Submit = Arc::new(move |req, photo, reply| {
        events.try_send(Event::Client(req, photo, reply)).is_ok()
    });
    crew.spawn("control", move || {
        control_worker(&listener, &config, &submit, &stop, &active)
    })?;
    Ok(clients)
}

fn spawn_button(
    crew: &mut Crew,
    config: &Config,
    events: &SyncSender<Event>,
    stop: &Arc<Stop>,
) -> Result<(), DaemonError> {
    let b = config.button.clone();
    if b.gpio_chip.as_os_str().is_empty() && b.input_device.as_os_str().is_empty() {
        return Ok(());
    }
    let (events, stop) = (events.clone(), stop.clone());
    crew.spawn("button", move || {
        let debounce = Duration::from_millis(b.debounce_ms);
        let mut pressed = || {
            let _ = events.try_send(Event::Button);
        };
        if b.gpio_chip.as_os_str().is_empty() {
            watch_button(&b.input_device, b.key_code, debounce, &stop, &mut pressed);
        } else {
            watch_gpio_button(
                &b.gpio_chip,
                b.gpio_line,
                b.gpio_active_low,
                debounce,
                &stop,
                &mut pressed,
            );
        }
    })
}

struct Daemon {
    config: Arc<Config>,
    config_path: Option<PathBuf>,
    outbox: Arc<Outbox>,
    notifier: Notifier,
    capture_tx: SyncSender<CaptureJob>,
    drain_tx: SyncSender<DrainCmd>,
    /// The last `drain` ticket handed out.
    drain_asked: Arc<AtomicU64>,
    /// `drain` clients, their tickets and what they have seen.
    drain_clients: DrainClients<SyncSender<Reply>>,
    cancel: Arc<AtomicBool>,
    led: LedHandle,
    skew: Arc<SkewClock>,
    busy: bool,
    /// Every deadline below is on this monotonic timer.
    timer: Arc<dyn Timer>,
    armed: Option<ArmedPerson>,
    last_result: String,
    last_drain: Option<DrainSummary>,
    /// Clients waiting for an upload to be confirmed.
    followers: Followed<SyncSender<Reply>>,
    status_line: String,
    counters: crate::service::metrics::Counters,
    metrics_written: Option<Duration>,
}

impl Daemon {
    fn ready(&mut self) {
        let usage = self.outbox.usage();
        self.notifier.ready(&format!(
            "ready; queue {} pending, {} dead",
            usage.pending, usage.dead
        ));
        log::info!("enrolld ready on {}", self.config.control.socket.display());
    }

    /// Reads events until SIGTERM or SIGINT. It waits exactly until its next
    /// deadline (an armed person's expiry, a follower's, the watchdog, the
    /// metrics file), or for the next event when none is set.
    fn main_loop(&mut self, events: &Receiver<Event>, workers: &[(&'static str, JoinHandle<()>)]) {
        let watchdog_every = watchdog_interval().map(|d| d / 2);
        let mut watchdog_at = watchdog_every.map(|every| self.timer.elapsed() + every);
        loop {
            let wait = wait_for_first(
                self.timer.elapsed(),
                [
                    self.armed.as_ref().map(ArmedPerson::until),
                    self.followers.next_deadline(),
                    watchdog_at,
                    self.metrics_due(),
                ],
            );
            let event = match wait {
                Some(wait) => events.recv_timeout(wait),
                None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match event {
                Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(event) => self.handle(event),
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = self.timer.elapsed();
            if self.armed.as_ref().is_some_and(|a| !a.live_at(now)) {
                self.armed = None;
            }
            deliver(self.followers.expire(now));
            if let (Some(every), Some(at)) = (watchdog_every, watchdog_at) {
                if now >= at {
                    self.watchdog(workers);
                    watchdog_at = Some(now + every);
                }
            }
            self.update_status();
        }
    }

    /// WATCHDOG=1 while every worker thread is alive.
    fn watchdog(&mut self, workers: &[(&'static str, JoinHandle<()>)]) {
        let dead: Vec<&str> = workers
            .iter()
            .filter(|(_, h)| h.is_finished())
            .map(|(n, _)| *n)
            .collect();
        if dead.is_empty() {
            self.notifier.watchdog();
        } else {
            log::error!(
                "worker thread(s) stopped: {}; withholding the watchdog",
                dead.join(", ")
            );
        }
    }

    /// When the metrics file is to be written again (the oldest pending
    /// entry's age moves on), if there is one.
    fn metrics_due(&self) -> Option<Duration> {
        if self.config.metrics.textfile.as_os_str().is_empty() {
            return None;
        }
        Some(
            self.metrics_written
                .map_or(Duration::ZERO, |t| t + METRICS_EVERY),
        )
    }

    /// Stops taking triggers, cancels a capture, gives an upload in progress
    /// [`SHUTDOWN_GRACE`], and gives every waiting client its last line.
    fn shutdown(self, crew: Crew, events: Receiver<Event>, timer: &dyn Timer) {
        self.notifier.stopping("stopping");
        self.cancel.store(true, Ordering::SeqCst);
        self.led.show(LedPattern::Off);
        // Workers blocked on telling the main loop something are let go.
        drop(events);
        let Daemon {
            capture_tx,
            drain_tx,
            mut followers,
            mut drain_clients,
            outbox,
            ..
        } = self;
        // Closing the job channels lets the capture and drain threads end.
        drop(capture_tx);
        drop(drain_tx);
        for name in wait_for_workers(&["drain", "capture"], &crew.ended, SHUTDOWN_GRACE, timer) {
            log::warn!("{name} did not finish in time; its entry stays queued");
        }
        // Every follow_upload client gets its closing line: uploaded if the
        // upload finished in the grace period, otherwise still queued.
        let receipts = if followers.is_empty() {
            Vec::new()
        } else {
            outbox.receipts().unwrap_or_default()
        };
        deliver(followers.stopping(&receipts));
        deliver(drain_clients.stopping());
    }

    fn update_status(&mut self) {
        let u = self.outbox.usage();
        let mut line = format!(
            "queue {} pending, {} dead; last: {}",
            u.pending, u.dead, self.last_result
        );
        if let Some(d) = &self.last_drain {
            // Times, not ages: the line changes only when the pause does, so
            // STATUS is not re-sent (nor the metrics rewritten) every tick.
            if let Some(p) = d.paused.first() {
                line.push_str(&format!(
                    "; uploads to {} paused since {}: {} {}; next check at {}",
                    p.provider,
                    crate::clock::rfc3339(p.since_ms),
                    p.code,
                    p.message,
                    crate::clock::rfc3339(p.next_check_ms)
                ));
            }
        }
        if self.busy {
            line.push_str("; enrolling");
        }
        if line != self.status_line {
            self.notifier.status(&line);
            self.status_line = line;
            self.metrics_written = None;
        }
        self.write_metrics(&u);
    }

    /// Rewrites the metrics file when something changed, or every 15 s
    /// (the oldest-pending age moves on).
    fn write_metrics(&mut self, usage: &crate::queue::outbox::Usage) {
        let path = &self.config.metrics.textfile;
        if path.as_os_str().is_empty()
            || self
                .metrics_written
                .is_some_and(|t| self.timer.elapsed().saturating_sub(t) < METRICS_EVERY)
        {
            return;
        }
        let paused = self
            .last_drain
            .as_ref()
            .map_or(&[][..], |d| d.paused.as_slice());
        if let Ok(n) = self.outbox.ledger().persons() {
            self.counters.persons = n;
        }
        let text = crate::service::metrics::render(
            usage,
            &self.counters,
            SystemClock.now_ms(),
            self.skew.offset_ms(),
            paused,
        );
        if let Err(e) = crate::service::metrics::write_atomic(path, &text) {
            log::warn!("metrics {}: {e}", path.display());
        }
        self.metrics_written = Some(self.timer.elapsed());
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Client(req, photo, reply) => self.request(req, photo, reply),
            Event::Button => self.button(),
            Event::ClockStepped => {
                // Full: it is woken anyway.
                let _ = self.drain_tx.try_send(DrainCmd::ClockStepped);
            }
            Event::Reload => self.reload(),
            // The main loop ends on it before it gets here.
            Event::Stop => {}
            Event::EnrollFinished {
                queued,
                result,
                follower,
            } => {
                self.busy = false;
                self.cancel.store(false, Ordering::SeqCst);
                self.last_result = result;
                if let Some(id) = queued {
                    if let Some(reply) = follower {
                        self.followers.add(id, reply, self.timer.elapsed());
                    }
                    let _ = self.drain_tx.try_send(DrainCmd::Wake);
                }
            }
            Event::DrainEntry(report) => {
                // Every client waiting on a drain hears of every entry; a
                // client too slow to read misses progress, never its answer.
                deliver(self.drain_clients.entry(&report));
            }
            Event::DrainFailed(failure, served) => {
                log::warn!("drain failed: {failure}");
                deliver(self.drain_clients.failed(&failure, served));
            }
            Event::Drained(summary, served) => {
                deliver(self.drain_clients.passed(&summary, served));
                if summary.uploaded > 0 {
                    self.led.show(LedPattern::Uploaded);
                    self.counters.last_success_ms = Some(SystemClock.now_ms());
                }
                self.counters.uploads += summary.uploaded;
                self.counters.retries += summary.retried;
                self.counters.dead += summary.dead;
                self.counters.pauses += summary.paused.len() as u64;
                self.metrics_written = None;
                self.last_drain = Some(summary);
                self.answer_followers();
            }
        }
    }

    fn start_enroll(
        &mut self,
        trigger: Trigger,
        reply: Option<SyncSender<Reply>>,
        follow_upload: bool,
    ) -> Result<(), Reply> {
        let Trigger {
            person,
            name,
            provider,
            frames,
            photo,
            consent,
        } = trigger;
        if self.busy {
            return Err(Reply::error(
                ErrorCode::Busy,
                "an enrollment is in progress; try again when it ends",
            ));
        }
        let provider = provider.unwrap_or(self.config.upload.provider);
        let source = match photo {
            Some(photo) => SourceSpec::Received(photo),
            None => self.config.camera.source.clone(),
        };
        let request = EnrollRequest {
            person_id: person,
            person_name: name,
            provider,
            source,
            frames,
            consent,
        };
        // The command line's verdict, before anything is captured.
        request
            .check(&self.config)
            .map_err(|e| Reply::error(e.code(), e.to_string()))?;
        let job = CaptureJob {
            config: self.config.clone(),
            request,
            reply,
            follow_upload,
        };
        self.capture_tx
            .try_send(job)
            .map_err(|_| Reply::error(ErrorCode::Busy, "the capture thread is busy"))?;
        self.busy = true;
        Ok(())
    }

    fn request(&mut self, req: Request, photo: Option<std::fs::File>, reply: SyncSender<Reply>) {
        let answer = |r: Reply| {
            let _ = reply.try_send(r);
        };
        match req {
            Request::Enroll {
                person,
                name,
                provider,
                frames,
                follow_upload,
                photo: photo_name,
                consent,
                peer_uid,
            } => {
                let trigger = Trigger {
                    person,
                    name,
                    provider,
                    frames,
                    consent: consent.map(|reference| crate::model::ConsentGiven {
                        reference,
                        via: crate::model::ConsentVia::Socket {
                            uid: peer_uid.unwrap_or(u32::MAX),
                        },
                    }),
                    photo: photo_name.zip(photo).map(|(name, file)| ReceivedPhoto {
                        name,
                        file: Arc::new(file),
                    }),
                };
                if let Err(e) = self.start_enroll(trigger, Some(reply.clone()), follow_upload) {
                    answer(e);
                }
            }
            // The button enrolls for the configured provider.
            Request::Arm {
                person,
                name,
                ttl_s,
            } => match self
                .config
                .upload
                .provider
                .check_person(&person, name.as_deref())
            {
                Err(e) => answer(Reply::error(e.code(), e.to_string())),
                Ok(()) => {
                    let now = self.timer.elapsed();
                    let armed = ArmedPerson::new(person.clone(), name, ttl_s, now);
                    let expires_in_s = armed.expires_in_s(now);
                    self.armed = Some(armed);
                    answer(Reply::answer(Answer::Armed {
                        armed: person,
                        expires_in_s,
                    }));
                }
            },
            Request::Status {} => answer(Reply::answer(Answer::Status(Box::new(self.status())))),
            Request::Drain {} => {
                let ticket = self.drain_asked.fetch_add(1, Ordering::SeqCst) + 1;
                self.drain_clients.ask(ticket, reply.clone());
                let _ = self.drain_tx.try_send(DrainCmd::Resume);
            }
            Request::QueueList {}
            | Request::QueueShow { .. }
            | Request::Retry { .. }
            | Request::Purge { .. }
            | Request::QueueReceipts {}
            | Request::QueueCheck {}
            | Request::Forget { .. }
            | Request::Ledger { .. } => {
                let result = handler::handle(&self.outbox, &self.config, &req);
                if matches!(
                    (&req, &result),
                    (Request::Retry { .. } | Request::Forget { .. }, Some(Ok(_)))
                ) {
                    let _ = self.drain_tx.try_send(DrainCmd::Wake);
                }
                answer(match result {
                    Some(Ok(a)) => Reply::answer(a),
                    Some(Err(f)) => f.into(),
                    None => Reply::error(ErrorCode::Internal, "not a queue request"),
                });
            }
            Request::Cancel {} => {
                let was_busy = self.busy;
                if was_busy {
                    self.cancel.store(true, Ordering::SeqCst);
                }
                let was_armed = self.armed.take().map(|a| a.person);
                answer(Reply::answer(Answer::Cancelled {
                    cancelled_enrollment: was_busy,
                    disarmed: was_armed,
                }));
            }
        }
    }

    fn button(&mut self) {
        let now = self.timer.elapsed();
        let press = on_press(&mut self.armed, now, self.config.button.unarmed, || {
            person_from_template(
                &self.config.button.id_template,
                &self.config.button.device_name,
            )
        });
        let (person, name) = match press {
            Press::Enroll { person, name } => (person, name),
            Press::Refuse => {
                log::warn!(
                    "button pressed with nobody armed; ignored (button.unarmed = \"reject\")"
                );
                self.led.show(LedPattern::Refused);
                self.last_result = "button pressed with nobody armed".into();
                return;
            }
        };
        // With button.consent the press is the consent, given to the
        // notice on the kiosk; the reference names the press.
        let consent = self
            .config
            .button
            .consent
            .then(|| crate::model::ConsentGiven {
                reference: format!(
                    "button press {}",
                    crate::clock::rfc3339(SystemClock.now_ms())
                ),
                via: crate::model::ConsentVia::Button,
            });
        let trigger = Trigger {
            person,
            name,
            provider: None,
            frames: None,
            photo: None,
            consent,
        };
        if let Err(e) = self.start_enroll(trigger, None, false) {
            log::warn!("button: {e:?}");
            self.led.show(LedPattern::Refused);
        }
    }

    fn status(&self) -> StatusReport {
        let now = self.timer.elapsed();
        let armed = self.armed.as_ref().map(|a| Armed {
            person: a.person.clone(),
            expires_in_s: a.expires_in_s(now),
        });
        StatusReport {
            daemon: "running".into(),
            state: Some(DaemonState {
                enrolling: self.busy,
                armed,
                last_result: self.last_result.clone(),
                last_drain: self.last_drain.clone(),
                clock_skew_ms: self.skew.offset_ms(),
                provider: self.config.upload.provider,
            }),
            ..handler::status(&self.outbox, &self.config.state_dir)
        }
    }

    fn reload(&mut self) {
        self.notifier.reloading();
        let source = config_source(self.config_path.as_deref());
        let loaded = Config::load(self.config_path.as_deref()).and_then(|(new, origin)| {
            crate::service::preflight::check(&new, &source).map(|()| (new, origin))
        });
        match loaded {
            Ok((new, _)) => {
                if new.control.socket != self.config.control.socket
                    || new.state_dir != self.config.state_dir
                {
                    log::warn!(
                        "control.socket and state_dir changes take effect at the next restart"
                    );
                }
                let new = Arc::new(new);
                self.config = new.clone();
                let _ = self.drain_tx.try_send(DrainCmd::Reload(new));
                log::info!("configuration reloaded");
                self.last_result = "configuration reloaded".into();
                self.notifier.notify("READY=1");
            }
            Err(e) => {
                log::error!("configuration not reloaded, keeping the old one: {e}");
                self.last_result = "reload failed; old configuration kept".into();
                self.notifier.notify(&format!(
                    "READY=1\nSTATUS=reload failed, old configuration kept: {}",
                    e.to_string().replace('\n', " ")
                ));
            }
        }
    }

    fn answer_followers(&mut self) {
        if self.followers.is_empty() {
            return;
        }
        let receipts = self.outbox.receipts().unwrap_or_default();
        let outbox = &self.outbox;
        deliver(self.followers.settle(|id| {
            if let Some(r) = receipts.iter().find(|r| r.id == id) {
                return Fate::Uploaded(r.face_ids.clone());
            }
            match outbox.get(id) {
                Ok(e) if matches!(e.state, EntryState::Dead { .. }) => {
                    Fate::Dead(e.last_error.map(|l| l.code).unwrap_or_default())
                }
                _ => Fate::Queued,
            }
        }));
    }
}

/// Sends each reply to its client. A client too slow to read (its channel
/// is full) or gone misses it; the daemon never waits on a client.
fn deliver(replies: Vec<(SyncSender<Reply>, Reply)>) {
    for (client, reply) in replies {
        let _ = client.try_send(reply);
    }
}

/// Builds a person id from `button.id_template` for a press now.
pub fn person_from_template(template: &str, device: &str) -> String {
    let device = if device.is_empty() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| "device".to_string(), |h| h.trim().to_string())
    } else {
        device.to_string()
    };
    crate::config::render_id_template(template, &device, SystemClock.now_ms() / 1000)
}

fn capture_worker(
    jobs: &Receiver<CaptureJob>,
    outbox: &Arc<Outbox>,
    events: &SyncSender<Event>,
    cancel: &AtomicBool,
    led: &LedHandle,
) {
    let mut detector: Option<(crate::config::DetectConfig, SeetaDetector)> = None;
    while let Ok(job) = jobs.recv() {
        // Progress is dropped for a client that does not read; the last
        // line waits for room.
        let send = |r: Reply| {
            if let Some(tx) = &job.reply {
                if r.is_last() {
                    let _ = tx.send(r);
                } else {
                    let _ = tx.try_send(r);
                }
            }
        };
        if detector
            .as_ref()
            .is_none_or(|(cfg, _)| *cfg != job.config.detect)
        {
            match SeetaDetector::new(&job.config.detect) {
                Ok(d) => detector = Some((job.config.detect.clone(), d)),
                Err(e) => {
                    send(Reply::error(ErrorCode::ModelInvalid, e.to_string()));
                    let _ = events.send(Event::EnrollFinished {
                        queued: None,
                        result: format!("error: {e}"),
                        follower: None,
                    });
                    continue;
                }
            }
        }
        let Some((_, det)) = detector.as_mut() else {
            continue;
        };
        led.show(LedPattern::Capturing);
        let outcome = enroll(&job.config, det, outbox, &job.request, cancel, &mut |p| {
            send(Reply::Event(answer::Event::of_progress(p)))
        });
        // Between bursts the daemon keeps the models, not their buffers.
        crate::capture::detect::FaceDetector::release(det);
        let person = &job.request.person_id;
        let (queued, result) = match outcome {
            Ok(EnrollOutcome::Queued {
                entry,
                images,
                frames,
            }) => {
                led.show(LedPattern::Queued);
                send(Reply::Event(answer::Event::Queued {
                    id: entry.id,
                    person: person.clone(),
                    images: images.clone(),
                }));
                // With follow_upload the answer comes once the upload is confirmed.
                let id = entry.id;
                if !job.follow_upload {
                    let outcome = EnrollOutcome::Queued {
                        entry,
                        images,
                        frames,
                    };
                    send(Reply::answer(Answer::of_enrollment(outcome)));
                }
                (Some(id), format!("queued {id} for {person}"))
            }
            Ok(EnrollOutcome::Rejected {
                reason,
                advice,
                frames,
                unreadable,
            }) => {
                led.show(LedPattern::Rejected(reason));
                let message = format!("{reason}: {advice}");
                // The whole outcome, every frame's report with it, as
                // `enroll --json` prints it without a daemon.
                let outcome = EnrollOutcome::Rejected {
                    reason,
                    advice: advice.clone(),
                    frames,
                    unreadable,
                };
                send(Reply::Event(answer::Event::Rejected {
                    reason,
                    advice,
                    outcome: Box::new(outcome),
                }));
                send(Reply::error(ErrorCode::Rejected, message));
                (None, format!("rejected {person}: {reason}"))
            }
            Err(e) => {
                let pattern = if matches!(
                    e,
                    EnrollError::Source(crate::capture::source::SourceError::Cancelled)
                ) {
                    LedPattern::Off
                } else {
                    LedPattern::Error
                };
                led.show(pattern);
                send(Reply::error(e.code(), e.to_string()));
                (None, format!("{} for {person}: {e}", e.code()))
            }
        };
        log::info!("enrollment: {result}");
        let follower = job.reply.filter(|_| job.follow_upload && queued.is_some());
        let _ = events.send(Event::EnrollFinished {
            queued,
            result,
            follower,
        });
    }
}

/// The file a configuration came from, as messages name it.
fn config_source(path: Option<&std::path::Path>) -> PathBuf {
    path.map_or_else(
        || PathBuf::from(crate::config::DEFAULT_CONFIG_PATH),
        std::path::Path::to_path_buf,
    )
}

/// Uploads what is due, then waits exactly until the next entry is due or a
/// pause is to be checked, or until the main loop says something; ends when
/// the main loop lets go of its commands. A rate-limit wait within a pass
/// ends at once when the daemon stops.
fn drain_worker(parts: DrainParts, commands: &Receiver<DrainCmd>, events: &SyncSender<Event>) {
    let DrainParts {
        config,
        outbox,
        clock,
        skew,
        asked,
        stop,
    } = parts;
    // Every entry's outcome goes to the main loop, for the drain clients.
    let build = |config: &Config| {
        let mut drainer = crate::service::uploads::build_drainer(
            config,
            outbox.clone(),
            clock.clone(),
            skew.clone(),
        );
        let progress = events.clone();
        drainer.set_observer(Box::new(move |report| {
            let _ = progress.try_send(Event::DrainEntry(report.clone()));
        }));
        drainer
    };
    let mut drainer = build(&config);
    while !stop.is_set() {
        let serving = asked.load(Ordering::SeqCst);
        let summary = drainer.drain(&mut |d| !stop.wait(d));
        let end = match summary {
            Ok(s) => {
                let end = PassEnd::Done {
                    next_due_ms: s.next_due_ms,
                    next_check_ms: s.paused.iter().map(|p| p.next_check_ms).min(),
                };
                // Blocking: progress may fill the channel, and a lost end
                // would leave every drain client waiting. The main loop lets
                // go of the channel when it stops, which ends the wait.
                if events.send(Event::Drained(s, serving)).is_err() {
                    return;
                }
                end
            }
            Err(e) => {
                log::error!("drain: {e}");
                if events.send(Event::DrainFailed(e.into(), serving)).is_err() {
                    return;
                }
                PassEnd::Failed
            }
        };
        let now = clock.now_ms();
        let wait = Duration::from_millis((next_pass_at(end, now) - now).max(0) as u64);
        match commands.recv_timeout(wait) {
            Ok(DrainCmd::Wake) | Err(RecvTimeoutError::Timeout) => {}
            Ok(DrainCmd::ClockStepped) => {
                if let Err(e) = drainer.clock_stepped() {
                    log::error!("drain: {e}");
                }
            }
            Ok(DrainCmd::Resume) => drainer.resume(),
            Ok(DrainCmd::Reload(cfg)) => drainer = build(&cfg),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Wakes the drain loop as soon as the wall clock is set (NTP stepping it
/// by hours, an operator's `date`), instead of letting it wait out a
/// schedule computed in the old time: a timerfd armed at an absolute time
/// with TFD_TIMER_CANCEL_ON_SET reads ECANCELED when the clock is set.
fn watch_clock_steps(events: &SyncSender<Event>) {
    use rustix::time::{
        timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags,
        TimerfdTimerFlags, Timespec,
    };
    let fd = match timerfd_create(TimerfdClockId::Realtime, TimerfdFlags::CLOEXEC) {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("clock steps will not wake the drain loop: timerfd: {e}");
            return;
        }
    };
    loop {
        // A year ahead: only the clock being set ends the wait early.
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: now.tv_sec.saturating_add(365 * 86_400),
                tv_nsec: 0,
            },
        };
        let flags = TimerfdTimerFlags::ABSTIME | TimerfdTimerFlags::CANCEL_ON_SET;
        if let Err(e) = timerfd_settime(&fd, flags, &spec) {
            log::warn!("clock steps will not wake the drain loop: timerfd_settime: {e}");
            return;
        }
        let mut buf = [0u8; 8];
        match rustix::io::read(&fd, &mut buf) {
            Err(rustix::io::Errno::CANCELED) => {
                log::info!(
                    "the wall clock was set (now {}); the upload schedule is redone",
                    crate::clock::rfc3339(crate::clock::Clock::now_ms(&SystemClock))
                );
                match events.try_send(Event::ClockStepped) {
                    // Full: the drain is woken by what fills it anyway.
                    Ok(()) | Err(mpsc::TrySendError::Full(_)) => {}
                    Err(mpsc::TrySendError::Disconnected(_)) => return,
                }
            }
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                log::warn!("clock steps will not wake the drain loop: {e}");
                return;
            }
        }
    }
}
