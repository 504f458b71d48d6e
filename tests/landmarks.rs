//! Landmarks, eye distance and pose on real photos (the faces of the
//! rustface package's sample photo), through the real binary; and the
//! landmark engine against an independent implementation of the same model.

mod support;

use enrolld::capture::detect::{FaceBox, FaceDetector, SeetaDetector};
use enrolld::capture::landmarks::blazeface_model;
use enrolld::config::DetectConfig;
use image::imageops::FilterType;
use image::RgbImage;
use serde_json::Value;
use support::*;

/// `enrolld --json detect` of each image; the report of each.
fn detect<N: AsRef<str>>(e: &Enrolld, images: &[(N, RgbImage)]) -> Vec<Value> {
    let mut args = vec!["detect".to_string()];
    for (name, img) in images {
        let p = e.path(&format!("{}.png", name.as_ref()));
        img.save(&p).expect("write photo");
        args.push(p.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_, v) = e.json(&args);
    let results = v.as_array().unwrap_or_else(|| panic!("an array: {v:#}"));
    assert_eq!(results.len(), images.len(), "{v:#}");
    results.iter().map(|r| r["report"].clone()).collect()
}

fn num(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

/// The chosen face's pose angle `which` and eye distance.
fn chosen(report: &Value, which: &str) -> (f64, f64) {
    let face = &report["chosen"];
    assert!(face.is_object(), "no face chosen: {report:#}");
    (
        num(&face["pose"][which], which),
        num(&face["eye_distance"], "eye_distance"),
    )
}

#[test]
fn a_head_turned_by_20_and_40_degrees_reports_that_roll() {
    let e = Enrolld::new("");
    let mut images = Vec::new();
    for i in 0..3 {
        let frame = frame_with_face(640, 480, i, 150);
        for angle in [0.0, 20.0, -20.0, 40.0, -40.0] {
            images.push((format!("face{i}_{angle}"), roll(&frame, angle)));
        }
    }
    let reports = detect(&e, &images);
    for (i, per_face) in reports.chunks(5).enumerate() {
        let (upright, eyes) = chosen(&per_face[0], "roll");
        assert_eq!(per_face[0]["accepted"], true, "face {i}: {:#}", per_face[0]);
        for (report, angle) in per_face[1..].iter().zip([20.0, -20.0, 40.0, -40.0]) {
            let (roll, turned_eyes) = chosen(report, "roll");
            let error = roll - upright - angle;
            assert!(
                error.abs() <= 7.0,
                "face {i} turned {angle}: roll {roll:.1}, upright {upright:.1}"
            );
            // Turning moves the eyes, it does not part them.
            assert!(
                (turned_eyes / eyes - 1.0).abs() < 0.15,
                "face {i} turned {angle}: eye distance {turned_eyes:.1} against {eyes:.1}"
            );
        }
    }
}

#[test]
fn a_mirrored_face_turns_the_other_way_by_as_much() {
    let e = Enrolld::new("");
    let mut images = Vec::new();
    for i in 0..FACES.len() {
        let p = portrait(i, 3.0);
        images.push((format!("face{i}"), p.clone()));
        images.push((
            format!("face{i}_mirrored"),
            image::imageops::flip_horizontal(&p),
        ));
    }
    let reports = detect(&e, &images);
    let mut turned = 0;
    for (i, pair) in reports.chunks(2).enumerate() {
        let (yaw, eyes) = chosen(&pair[0], "yaw");
        let (mirrored_yaw, mirrored_eyes) = chosen(&pair[1], "yaw");
        let (roll, _) = chosen(&pair[0], "roll");
        let (mirrored_roll, _) = chosen(&pair[1], "roll");
        let what = format!(
            "face {i}: yaw {yaw:.1} / {mirrored_yaw:.1}, roll {roll:.1} / {mirrored_roll:.1}"
        );
        // The sign flips, the size stays.
        assert!((yaw + mirrored_yaw).abs() <= 5.0, "{what}");
        assert!((roll + mirrored_roll).abs() <= 4.0, "{what}");
        assert!((mirrored_eyes / eyes - 1.0).abs() < 0.06, "{what}");
        if yaw.abs() >= 5.0 {
            assert!(yaw.signum() != mirrored_yaw.signum(), "{what}");
            turned += 1;
        }
    }
    assert!(
        turned >= 2,
        "too few of the faces are turned for the sign to be tested"
    );
}

#[test]
fn a_face_or_its_margin_cut_by_any_edge_is_rejected_as_face_cut_off() {
    let e = Enrolld::new("");
    let frame = frame_with_face(800, 600, 0, 200);
    let whole = detect(&e, &[("whole", frame.clone())]).remove(0);
    assert_eq!(whole["accepted"], true, "{whole:#}");
    let face = &whole["chosen"];
    let (x, y, s) = (
        num(&face["x"], "x") as u32,
        num(&face["y"], "y") as u32,
        num(&face["width"], "width") as u32,
    );
    let (w, h) = frame.dimensions();
    // The frame cut 10% of the face's size beyond each side of its box
    // (the face whole, its margin not), then a fifth into the face.
    let mut images = Vec::new();
    for (name, beyond) in [("margin", s / 10), ("face", 0)] {
        let inside = if beyond == 0 { s / 5 } else { 0 };
        let cuts = [
            ("left", (x - beyond + inside, 0, w - x + beyond - inside, h)),
            ("top", (0, y - beyond + inside, w, h - y + beyond - inside)),
            ("right", (0, 0, x + s + beyond - inside, h)),
            ("bottom", (0, 0, w, y + s + beyond - inside)),
        ];
        for (edge, (cx, cy, cw, ch)) in cuts {
            let img = image::imageops::crop_imm(&frame, cx, cy, cw, ch).to_image();
            images.push((format!("{name}_{edge}"), img));
        }
    }
    for ((name, _), report) in images.iter().zip(detect(&e, &images)) {
        assert_eq!(report["accepted"], false, "{name}: {report:#}");
        let reason = report["rejection"].as_str().unwrap_or_default();
        if name.starts_with("margin") {
            // The whole face is there: it is found, and refused for its cut.
            assert_eq!(reason, "face_cut_off", "{name}: {report:#}");
        } else {
            assert!(
                reason == "face_cut_off" || reason == "no_face",
                "{name}: {report:#}"
            );
        }
    }
}

#[test]
fn every_face_of_the_group_photo_has_landmarks_and_none_is_false() {
    let e = Enrolld::new("");
    let report = detect(&e, &[("group", group_photo().clone())]).remove(0);
    let faces = report["faces"].as_array().expect("faces");
    assert!(faces.len() >= 12, "{} faces", faces.len());
    for f in faces {
        let (x, y, s) = (num(&f["x"], "x"), num(&f["y"], "y"), num(&f["width"], "w"));
        let l = &f["landmarks"];
        for eye in ["right_eye", "left_eye"] {
            let (ex, ey) = (num(&l[eye]["x"], eye), num(&l[eye]["y"], eye));
            assert!(
                ex > x && ex < x + s && ey > y && ey < y + s * 0.7,
                "{eye} outside its face: {f}"
            );
        }
        // The subject's right eye is on the image's left.
        assert!(num(&l["right_eye"]["x"], "x") < num(&l["left_eye"]["x"], "x"));
        let ratio = num(&f["eye_distance"], "eye_distance") / s;
        assert!(
            (0.25..0.5).contains(&ratio),
            "eye distance {ratio:.2} of the box: {f}"
        );
        // Each face is one of the 29 labelled people.
        let (cx, cy) = (x + s / 2.0, y + s / 2.0);
        assert!(
            SOLVAY.iter().any(|&(lx, ly, ls)| {
                let (lx, ly, ls) = (f64::from(lx), f64::from(ly), f64::from(ls));
                cx >= lx && cx < lx + ls && cy >= ly && cy < ly + ls
            }),
            "a face where nobody is: {f}"
        );
    }
}

/// Whether a box's centre lies on one of the group photo's labelled faces.
fn on_a_labelled_face(f: &FaceBox) -> bool {
    let (cx, cy) = (f.x + f.width as i32 / 2, f.y + f.height as i32 / 2);
    SOLVAY
        .iter()
        .any(|&(x, y, s)| cx >= x && cx < x + s as i32 && cy >= y && cy < y + s as i32)
}

#[test]
fn false_faces_a_permissive_detector_proposes_are_not_confirmed() {
    // rustface at a quarter of its default threshold proposes faces where
    // there are none; the landmark model must drop those and only those.
    let cfg = DetectConfig {
        score_threshold: 0.5,
        min_face_px: 20,
        ..DetectConfig::default()
    };
    let mut detector = SeetaDetector::new(&cfg).expect("detector");
    let (mut proposed_false, mut real) = (0, 0);
    for img in [group_photo().clone(), no_face_photo()] {
        let proposed = detector.detect(&image::imageops::grayscale(&img));
        let confirmed = detector.landmarks(&img, proposed.clone());
        proposed_false += proposed.iter().filter(|f| !on_a_labelled_face(f)).count();
        for f in &confirmed {
            assert!(on_a_labelled_face(f), "a false face was confirmed: {f:?}");
            assert!(f.landmarks.is_some() && f.eye_distance.is_some() && f.pose.is_some());
        }
        let proposed_real = proposed.iter().filter(|f| on_a_labelled_face(f)).count();
        assert_eq!(confirmed.len(), proposed_real, "a real face was dropped");
        real += proposed_real;
    }
    assert!(
        proposed_false >= 2,
        "the detector proposed no false face to drop"
    );
    assert!(real >= 25, "{real} real faces");
}

/// The model's input for a square of `side` pixels around `(cx, cy)`,
/// made here independently of enrolld's sampler: RGB, NHWC, -1..1.
fn model_input(img: &RgbImage, cx: u32, cy: u32, side: u32) -> Vec<f32> {
    let x0 = cx.saturating_sub(side / 2);
    let y0 = cy.saturating_sub(side / 2);
    let square = image::imageops::crop_imm(img, x0, y0, side, side).to_image();
    let small = image::imageops::resize(&square, 128, 128, FilterType::Triangle);
    small
        .as_raw()
        .iter()
        .map(|&v| f32::from(v) / 127.5 - 1.0)
        .collect()
}

/// tract (Sonos), a general ONNX engine, runs the same model. Its loader
/// reads a `ConstantOfShape` without a `value` as f64 where ONNX says f32,
/// so the attribute is written into its copy of the model.
#[cfg(target_arch = "x86_64")]
fn tract_reference(inputs: &[Vec<f32>]) -> Vec<Vec<Vec<f32>>> {
    use tract_onnx::pb::{attribute_proto::AttributeType, tensor_proto::DataType};
    use tract_onnx::pb::{AttributeProto, TensorProto};
    use tract_onnx::prelude::*;
    let onnx = tract_onnx::onnx();
    let mut proto = onnx
        .proto_model_for_read(&mut &blazeface_model()[..])
        .expect("tract reads the model");
    let graph = proto.graph.as_mut().expect("a graph");
    for node in graph
        .node
        .iter_mut()
        .filter(|n| n.op_type == "ConstantOfShape")
    {
        if !node.attribute.iter().any(|a| a.name == "value") {
            node.attribute.push(AttributeProto {
                name: "value".into(),
                r#type: AttributeType::Tensor as i32,
                t: Some(TensorProto {
                    dims: vec![1],
                    data_type: DataType::Float as i32,
                    float_data: vec![0.0],
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    let model = onnx
        .model_for_proto_model(&proto)
        .expect("tract loads the model")
        .with_input_fact(0, f32::fact([1, 128, 128, 3]).into())
        .expect("input shape")
        .into_optimized()
        .expect("optimised")
        .into_runnable()
        .expect("runnable");
    inputs
        .iter()
        .map(|input| {
            let tensor = tract_ndarray::Array4::from_shape_vec((1, 128, 128, 3), input.clone())
                .expect("shape");
            let outputs = model
                .run(tvec!(Tensor::from(tensor).into()))
                .expect("tract runs");
            outputs
                .iter()
                .map(|o| {
                    let view = o.to_plain_array_view::<f32>().expect("f32");
                    view.iter().copied().collect()
                })
                .collect()
        })
        .collect()
}

/// Outputs within this much of the reference: the regressors are in model
/// pixels (128 a side), so 0.02 is a fiftieth of a model pixel, well under
/// a frame pixel for any face the device takes; the scores are logits.
const TOLERANCE: f32 = 0.02;

#[test]
#[cfg_attr(
    not(target_arch = "x86_64"),
    ignore = "the reference engine (tract) is a host-only dev-dependency"
)]
fn the_landmark_engine_matches_an_independent_implementation_on_real_faces() {
    #[cfg(target_arch = "x86_64")]
    {
        // Faces of the group photo at their own size and as portraits.
        let mut inputs = Vec::new();
        for &(x, y, s) in &FACES {
            inputs.push(model_input(group_photo(), x + s / 2, y + s / 2, s * 2));
        }
        for i in 0..3 {
            let p = portrait(i, 3.0);
            let (w, h) = p.dimensions();
            inputs.push(model_input(&p, w / 2, h * 2 / 5, w.min(h)));
        }
        inputs.push(model_input(&no_face_photo(), 300, 200, 300));
        let reference = tract_reference(&inputs);
        let mut net =
            enrolld_nn::Net::from_onnx(blazeface_model(), &[1, 128, 128, 3]).expect("ours");
        let mut worst = 0.0f32;
        for (k, (input, theirs)) in inputs.iter().zip(&reference).enumerate() {
            let ours = net.run(input).expect("ours runs");
            assert_eq!(ours.len(), theirs.len(), "input {k}: outputs");
            for (o, (a, b)) in ours.iter().zip(theirs).enumerate() {
                assert_eq!(a.len(), b.len(), "input {k}, output {o}: length");
                for (j, (x, y)) in a.iter().zip(b).enumerate() {
                    let d = (x - y).abs();
                    worst = worst.max(d);
                    assert!(
                        d <= TOLERANCE,
                        "input {k}, output {o}[{j}]: ours {x}, tract {y}"
                    );
                }
            }
            // The faces are found by both with the same confidence.
            let best = |s: &[f32]| s.iter().copied().fold(f32::MIN, f32::max);
            if k < FACES.len() + 3 {
                assert!(best(ours[0]).max(best(ours[1])) > 0.0, "input {k}: no face");
            }
        }
        println!("largest difference from tract: {worst:e}");
    }
}
