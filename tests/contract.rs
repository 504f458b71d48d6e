//! Vendor contracts: every code of Tencent's CreateFace error table, the
//! request that provokes it from the emulator, the emulator's answer and
//! the class enrolld gives it; and the client's own id, name and group
//! checks against the emulator's, rule by rule, at the boundaries.

mod support;

use enrolld::cloud::tencent::{classify_code, TencentClient, DOCUMENTED_CODES};
use enrolld::cloud::{base64, UploadError};
use enrolld::model::rules::tencent as tc;
use enrolld::model::ErrorClass;
use enrolld::model::Provider;
use serde_json::{json, Value};
use support::*;

fn jpeg_b64(i: usize) -> String {
    base64(&encode(&portrait(i, 3.0), image::ImageFormat::Jpeg))
}

/// How a documented code is provoked.
enum Provoke {
    /// This call, after this fault (if any), gets this code.
    Call(&'static str, Value, Option<&'static str>),
    /// No CreateFace, CreatePerson, GetPersonBaseInfo, DeleteFace or
    /// DeletePerson request of enrolld's
    /// can get it (why); the class still matters if the cloud sends it.
    Unreachable(&'static str),
}

fn table() -> Vec<(&'static str, ErrorClass, Provoke)> {
    use ErrorClass::*;
    use Provoke::*;
    let group_api = Unreachable("group management (CreateGroup, ModifyGroup)");
    let search = Unreachable("search and list APIs");
    let person_info = Unreachable("PersonExDescriptionInfos and Gender, which enrolld never sends");
    let billing = Unreachable("an account or billing state");
    let person = |group: &str, id: &str, name: &str, image: String| json!({"GroupId": group, "PersonId": id, "PersonName": name, "Image": image});
    vec![
        ("FailedOperation.ConflictOperation", Retry, Unreachable("two operations on one person at once; enrolld uploads one entry at a time")),
        ("FailedOperation.DuplicatedGroupDescription", Never, group_api),
        ("FailedOperation.GroupInDeletedState", Operator, Unreachable("DeleteGroup in progress")),
        ("FailedOperation.GroupPersonMapExist", Never, Unreachable("CopyPerson; enrolld treats it as 'the person exists' on CreatePerson")),
        ("FailedOperation.GroupPersonMapNotExist", Never, Unreachable("DeletePersonFromGroup")),
        ("FailedOperation.ImageDecodeFailed", Never, Call("CreatePerson", person("g", "p-decode", "p", base64(b"this is not an image")), None)),
        ("FailedOperation.ImageDownloadError", Never, Unreachable("Urls, which enrolld never sends")),
        ("FailedOperation.ImageFacedetectFailed", Never, Unreachable("a fault of the detection service")),
        ("FailedOperation.ImageSizeExceed", Never, Call("CreatePerson", person("g", "p-big", "p", "A".repeat(5 * 1024 * 1024 + 4)), None)),
        ("FailedOperation.RequestTimeout", Retry, Unreachable("a backend timeout")),
        ("FailedOperation.SearchFacesExceed", Never, Unreachable("SearchFaces")),
        ("FailedOperation.ServerError", Retry, Unreachable("a fault of the algorithm service")),
        ("InternalError", Retry, Call("GetPersonBaseInfo", json!({"PersonId": "exists"}), Some("busy"))),
        ("InvalidParameter.InvalidParameter", Never, Call("CreateFace", json!({"PersonId": "exists", "Images": "not an array"}), None)),
        ("InvalidParameterValue.AccountFaceNumExceed", Operator, Unreachable("10 million faces in one account")),
        // "exists" holds one face, the emulator's first (ids are sequential).
        ("InvalidParameterValue.DeleteFaceNumExceed", Never, Call("DeleteFace", json!({"PersonId": "exists", "FaceIds": ["2875186538564559001"]}), None)),
        ("InvalidParameterValue.GroupExDescriptionsExceed", Never, Unreachable("CreateGroup")),
        ("InvalidParameterValue.GroupExDescriptionsNameIdentical", Never, Unreachable("CreateGroup")),
        ("InvalidParameterValue.GroupExDescriptionsNameIllegal", Never, Unreachable("CreateGroup")),
        ("InvalidParameterValue.GroupExDescriptionsNameTooLong", Never, Unreachable("CreateGroup")),
        ("InvalidParameterValue.GroupFaceNumExceed", Operator, Unreachable("a million faces in one group")),
        ("InvalidParameterValue.GroupIdAlreadyExist", Never, Unreachable("CreateGroup")),
        ("InvalidParameterValue.GroupIdIllegal", Operator, Call("CreatePerson", person("my group/中文", "p-g", "p", jpeg_b64(0)), None)),
        ("InvalidParameterValue.GroupIdNotExist", Operator, Unreachable("a group that was never created; the emulator takes every legal group id as created")),
        ("InvalidParameterValue.GroupIdTooLong", Operator, Call("CreatePerson", person(&"g".repeat(65), "p-g", "p", jpeg_b64(0)), None)),
        ("InvalidParameterValue.GroupIdsExceed", Never, Unreachable("SearchFaces")),
        ("InvalidParameterValue.GroupNameAlreadyExist", Never, Unreachable("CreateGroup")),
        ("InvalidParameterValue.GroupNameIllegal", Never, Unreachable("CreateGroup")),
        ("InvalidParameterValue.GroupNameTooLong", Never, Unreachable("CreateGroup")),
        ("InvalidParameterValue.GroupNumExceed", Operator, Unreachable("CreateGroup")),
        ("InvalidParameterValue.GroupNumPerPersonExceed", Operator, Unreachable("CopyPerson")),
        ("InvalidParameterValue.GroupTagIllegal", Never, Unreachable("CreateGroup")),
        ("InvalidParameterValue.GroupTagTooLong", Never, Unreachable("CreateGroup")),
        ("InvalidParameterValue.ImageEmpty", Never, Call("CreatePerson", person("g", "p-empty", "p", String::new()), None)),
        ("InvalidParameterValue.LimitExceed", Never, search),
        ("InvalidParameterValue.NoFaceInGroups", Never, Unreachable("SearchFaces")),
        ("InvalidParameterValue.NoFaceInPhoto", Never, Call("CreatePerson", person("g", "p-noface", "p", base64(&encode(&no_face_photo(), image::ImageFormat::Jpeg))), None)),
        ("InvalidParameterValue.OffsetExceed", Never, Unreachable("GetPersonList")),
        ("InvalidParameterValue.PersonExDescriptionInfosExceed", Never, person_info),
        ("InvalidParameterValue.PersonExDescriptionsNameIdentical", Never, Unreachable("PersonExDescriptionInfos")),
        ("InvalidParameterValue.PersonExDescriptionsNameIllegal", Never, Unreachable("PersonExDescriptionInfos")),
        ("InvalidParameterValue.PersonExDescriptionsNameTooLong", Never, Unreachable("PersonExDescriptionInfos")),
        ("InvalidParameterValue.PersonExistInGroup", Never, Call("CreatePerson", person("g", "exists", "p", jpeg_b64(1)), None)),
        ("InvalidParameterValue.PersonFaceNumExceed", Never, Call("CreateFace", json!({"PersonId": "full", "Images": [jpeg_b64(0)]}), None)),
        ("InvalidParameterValue.PersonGenderIllegal", Never, Unreachable("Gender")),
        ("InvalidParameterValue.PersonIdAlreadyExist", Never, Call("CreatePerson", person("other", "exists", "p", jpeg_b64(1)), None)),
        ("InvalidParameterValue.PersonIdIllegal", Never, Call("GetPersonBaseInfo", json!({"PersonId": "emp 42"}), None)),
        ("InvalidParameterValue.PersonIdNotExist", Never, Call("GetPersonBaseInfo", json!({"PersonId": "nobody"}), None)),
        ("InvalidParameterValue.PersonIdTooLong", Never, Call("CreateFace", json!({"PersonId": "x".repeat(65), "Images": [jpeg_b64(0)]}), None)),
        ("InvalidParameterValue.PersonNameIllegal", Never, Call("CreatePerson", person("g", "p-name", "emp#42", jpeg_b64(0)), None)),
        ("InvalidParameterValue.PersonNameTooLong", Never, Call("CreatePerson", person("g", "p-name", &"a".repeat(61), jpeg_b64(0)), None)),
        ("InvalidParameterValue.SearchPersonsExceed", Never, Unreachable("SearchPersons")),
        ("InvalidParameterValue.UploadFaceNumExceed", Never, Call("CreateFace", json!({"PersonId": "exists", "Images": [jpeg_b64(0), jpeg_b64(1), jpeg_b64(2), jpeg_b64(3), jpeg_b64(4)]}), None)),
        ("InvalidParameterValue.UrlIllegal", Never, Unreachable("Urls")),
        ("LimitExceeded.ErrorFaceNumExceed", Operator, Call("GetPersonBaseInfo", json!({"PersonId": "exists"}), Some("quota"))),
        ("MissingParameter.ErrorParameterEmpty", Never, Call("CreateFace", json!({"PersonId": "exists"}), None)),
        ("ResourceUnavailable.Delivering", Retry, Unreachable("a service being provisioned")),
        ("ResourceUnavailable.Freeze", Operator, Unreachable("a frozen account")),
        ("ResourceUnavailable.InArrears", Operator, Call("GetPersonBaseInfo", json!({"PersonId": "exists"}), Some("billing"))),
        ("ResourceUnavailable.NotExist", Operator, billing),
        ("ResourceUnavailable.Recover", Operator, Unreachable("a reclaimed resource")),
        ("ResourceUnavailable.StopUsing", Operator, Unreachable("a stopped account")),
        ("ResourceUnavailable.UnknownStatus", Operator, Unreachable("an unknown billing state")),
        ("ResourcesSoldOut.ChargeStatusException", Operator, Unreachable("a charging fault")),
        ("UnsupportedOperation.UnknowMethod", Operator, Call("CreateFaces", json!({"PersonId": "exists"}), None)),
        // Not in the table, documented elsewhere: image size errors.
        ("FailedOperation.ImageResolutionTooSmall", Never, Call("CreatePerson", person("g", "p-small", "p", base64(&encode(&image::RgbImage::new(50, 50), image::ImageFormat::Jpeg))), None)),
        // A PNG may be at most 2000 px long (JPEG 4000).
        ("FailedOperation.ImageResolutionExceed", Never, Call("CreatePerson", person("g", "p-wide", "p", base64(&encode(&image::RgbImage::new(2001, 64), image::ImageFormat::Png))), None)),
    ]
}

/// How many codes the CreateFace page's error table (section 6) lists; the
/// first rows of `table()` are those codes, in the page's order.
const SEED_TABLE_LEN: usize = 65;

#[test]
fn every_documented_tencent_code_is_classified_and_the_emulator_answers_it() {
    let rows = table();
    let seed_rows = &rows[..SEED_TABLE_LEN];
    // The client's table and this one list the same codes with the same classes.
    assert_eq!(DOCUMENTED_CODES.len(), SEED_TABLE_LEN);
    for ((code, class, _), (documented, documented_class)) in seed_rows.iter().zip(DOCUMENTED_CODES)
    {
        assert_eq!(
            (*code, *class),
            (documented, documented_class),
            "the client's table differs"
        );
    }
    let cloud = Cloud::start(Provider::Tencent);
    let c = cloud.tencent_client();
    // An existing person in group g, and one with the 5 faces a person may hold.
    c.call("CreatePerson", &json!({"GroupId": "g", "PersonId": "exists", "PersonName": "exists", "Image": jpeg_b64(0)}))
        .expect("person");
    c.call(
        "CreatePerson",
        &json!({"GroupId": "g", "PersonId": "full", "PersonName": "full", "Image": jpeg_b64(0)}),
    )
    .expect("person");
    let four: Vec<String> = (1..5).map(jpeg_b64).collect();
    let added = c
        .call("CreateFace", &json!({"PersonId": "full", "Images": four}))
        .expect("faces");
    assert_eq!(added["SucFaceNum"], 4, "{added}");
    let mut provoked = 0;
    let mut unreachable = 0;
    for (code, class, provoke) in rows {
        assert_eq!(classify_code(code), class, "{code}");
        let (action, params, fault) = match provoke {
            Provoke::Call(action, params, fault) => (action, params, fault),
            Provoke::Unreachable(why) => {
                assert!(!why.is_empty(), "{code}: say why no request reaches it");
                unreachable += 1;
                continue;
            }
        };
        if let Some(f) = fault {
            cloud.push_fault(&format!("{f}@{action}"));
        }
        let err: UploadError = c.call(action, &params).expect_err(code);
        assert_eq!(err.code, code, "{action} {params:.200}");
        assert_eq!(err.class, class, "{code}");
        provoked += 1;
    }
    println!(
        "{provoked} codes provoked from the emulator and classified; {unreachable} unreachable by enrolld's requests, classified"
    );
}

#[test]
fn ret_codes_per_image_are_given_up_for_good() {
    let cloud = Cloud::start(Provider::Tencent);
    let c = cloud.tencent_client();
    c.call("CreatePerson", &json!({"GroupId": "g", "PersonId": "exists", "PersonName": "exists", "Image": jpeg_b64(0)}))
        .expect("person");
    let images = [
        base64(&encode(&no_face_photo(), image::ImageFormat::Jpeg)),
        base64(b"not an image"),
        base64(&encode(
            &image::RgbImage::new(40, 40),
            image::ImageFormat::Jpeg,
        )),
    ];
    let r = c
        .call(
            "CreateFace",
            &json!({"PersonId": "exists", "Images": images}),
        )
        .expect("a partial answer, not an error");
    assert_eq!(r["RetCode"], json!([-1101, -1102, -1109]), "{r}");
    let mut entry: enrolld::model::Enrollment = serde_json::from_value(json!({
        "format_version": 2, "id": 1, "person_id": "exists", "provider": "tencent",
        "group": {"id": "g", "name": ""}, "created_at_ms": 0, "attempts": 1,
        "next_attempt_at_ms": 0, "state": "in_flight", "since_ms": 0, "last_error": null,
        "images": []
    }))
    .expect("entry");
    let err = enrolld::cloud::tencent::apply_create_face(&mut entry, &[0, 1, 2], &r)
        .expect_err("nothing was added");
    assert_eq!(err.class, ErrorClass::Never);
}

/// What the emulator says of a value: `None` accepted, or the refusal's code.
fn emulator_verdict(
    c: &TencentClient,
    action: &str,
    params: Value,
    accepted: &str,
) -> Option<String> {
    match c.call(action, &params) {
        Ok(_) => None,
        Err(e) if e.code == accepted => None,
        Err(e) => Some(e.code),
    }
}

fn client_verdict(r: Result<(), enrolld::model::rules::RuleViolation>) -> Option<String> {
    r.err()
        .map(|v| v.vendor_code.unwrap_or("refused").to_string())
}

fn id_candidates() -> Vec<String> {
    let mut ids: Vec<String> = vec![
        "a".into(),
        "emp#42@hq".into(),
        "A-Z_09".into(),
        "张三".into(),
        "a b".into(),
        "a/b".into(),
        "a.b".into(),
        "a😀".into(),
        "é".into(),
        "a\tb".into(),
        "ｚ".into(),
        "a+b".into(),
        "a:b".into(),
        String::new(),
    ];
    for p in tc::ID_PUNCTUATION.chars() {
        ids.push(p.to_string());
        ids.push(format!("a{p}b"));
    }
    for n in [60, 63, 64, 65] {
        ids.push("x".repeat(n));
        ids.push(tc::ID_PUNCTUATION.chars().cycle().take(n).collect());
    }
    // 21 three-byte characters: 63 bytes, illegal for its characters.
    ids.push("名".repeat(21));
    // What the button makes, from host names with dots and from long ones.
    for device in ["kiosk.lobby-3", "门禁-1", &"d".repeat(80)] {
        ids.push(enrolld::config::render_id_template(
            "{device}-{unix_time}",
            device,
            1_790_000_000,
        ));
    }
    ids
}

#[test]
fn client_and_emulator_agree_on_every_person_id_group_id_and_name() {
    let cloud = Cloud::start(Provider::Tencent);
    let c = cloud.tencent_client();
    let mut checked = 0;
    for id in id_candidates() {
        let emulator = emulator_verdict(
            &c,
            "GetPersonBaseInfo",
            json!({"PersonId": id}),
            "InvalidParameterValue.PersonIdNotExist",
        );
        assert_eq!(
            client_verdict(tc::check_person_id(&id)),
            emulator,
            "person id {id:?}"
        );
        // The group first; an empty image is the next refusal when it passes.
        let emulator = emulator_verdict(
            &c,
            "CreatePerson",
            json!({"GroupId": id, "PersonId": "p", "PersonName": "p", "Image": ""}),
            "InvalidParameterValue.ImageEmpty",
        );
        assert_eq!(
            client_verdict(tc::check_group_id(&id)),
            emulator,
            "group id {id:?}"
        );
        // The name derived from every legal id is legal.
        if tc::check_person_id(&id).is_ok() {
            let name = tc::default_person_name(&id);
            let emulator = emulator_verdict(
                &c,
                "CreatePerson",
                json!({"GroupId": "g", "PersonId": "p", "PersonName": name, "Image": ""}),
                "InvalidParameterValue.ImageEmpty",
            );
            assert_eq!(emulator, None, "default name {name:?} of {id:?}");
        }
        checked += 1;
    }
    let names: Vec<String> = vec![
        "张三".into(),
        "Zhang_San-2".into(),
        "名".repeat(60),
        "名".repeat(61),
        "a".repeat(60),
        "a".repeat(61),
        "emp#42".into(),
        "a b".into(),
        String::new(),
        "ｚ".into(),
        "😀".into(),
        "𠀀".into(),
        "a.b".into(),
        "㐀".into(),
    ];
    for name in names {
        let emulator = emulator_verdict(
            &c,
            "CreatePerson",
            json!({"GroupId": "g", "PersonId": "p", "PersonName": name, "Image": ""}),
            "InvalidParameterValue.ImageEmpty",
        );
        assert_eq!(
            client_verdict(tc::check_person_name(&name)),
            emulator,
            "name {name:?}"
        );
        checked += 1;
    }
    println!("{checked} ids and names: the client's checks and the emulator agree");
}

#[test]
fn tencent_deletes_are_modelled_and_a_person_already_gone_counts_as_deleted() {
    use enrolld::cloud::{ForgetRequest, Uploader};
    let cloud = Cloud::start(Provider::Tencent);
    let mut c = cloud.tencent_client();
    c.call(
        "CreatePerson",
        &json!({"GroupId": "g", "PersonId": "two", "PersonName": "two", "Image": jpeg_b64(0)}),
    )
    .expect("person");
    let added = c
        .call(
            "CreateFace",
            &json!({"PersonId": "two", "Images": [jpeg_b64(1)]}),
        )
        .expect("face");
    let second = added["SucFaceIds"][0]
        .as_str()
        .expect("face id")
        .to_string();
    let faces = |c: &TencentClient| c.person_faces("two").expect("lookup");
    // DeleteFace of one of two faces: the other stays.
    let req = |face_ids: Vec<String>, created_person: bool| ForgetRequest {
        person_id: "two".into(),
        face_ids,
        created_person,
        faces_before: None,
    };
    let done = c
        .forget(&req(vec![second.clone()], false))
        .expect("DeleteFace");
    assert_eq!((done.how.as_str(), done.manual), ("DeleteFace", false));
    let left = faces(&c).expect("the person stays");
    assert_eq!(left.len(), 1);
    assert!(!left.contains(&second));
    // Its last face: DeleteFaceNumExceed, so the whole person goes.
    let done = c.forget(&req(left.clone(), false)).expect("DeletePerson");
    assert_eq!(done.how, "DeletePerson");
    assert_eq!(faces(&c), None, "the person is gone");
    // Gone already: both of Tencent's "no such person" answers count as deleted.
    for created in [true, false] {
        let done = c.forget(&req(left.clone(), created)).expect("already gone");
        assert!(done.how.contains("no longer has"), "{}", done.how);
    }
    let err = c
        .call("DeletePerson", &json!({"PersonId": "two"}))
        .expect_err("unknown person");
    assert_eq!(err.code, "ResourceNotFound.ErrorPersonNotExisted");
    let err = c
        .call("DeleteFace", &json!({"PersonId": "two", "FaceIds": "x"}))
        .expect_err("bad FaceIds");
    assert_eq!(err.code, "InvalidParameter.InvalidParameter");
}

#[test]
fn quality_control_refuses_a_dark_face_that_no_control_lets_through() {
    let cloud = Cloud::start(Provider::Tencent);
    let c = cloud.tencent_client();
    let dark = base64(&encode(
        &exposure(&portrait(0, 3.0), 0.2),
        image::ImageFormat::Jpeg,
    ));
    let person = |id: &str, control: u8| json!({"GroupId": "g", "PersonId": id, "PersonName": id, "Image": dark, "QualityControl": control});
    let err = c
        .call("CreatePerson", &person("dim-1", 4))
        .expect_err("refused");
    assert_eq!(err.code, "FailedOperation.FaceQualityNotQualified");
    assert_eq!(err.class, ErrorClass::Never);
    c.call("CreatePerson", &person("dim-1", 0))
        .expect("no control: created");
    let r = c
        .call(
            "CreateFace",
            &json!({"PersonId": "dim-1", "Images": [dark, jpeg_b64(1)], "QualityControl": 3}),
        )
        .expect("a partial answer");
    assert_eq!(r["RetCode"], json!([-1601, 0]), "{r}");
    // A fair portrait passes the strictest level.
    c.call(
        "CreateFace",
        &json!({"PersonId": "dim-1", "Images": [jpeg_b64(2)], "QualityControl": 4}),
    )
    .map(|r| assert_eq!(r["RetCode"], json!([0]), "{r}"))
    .expect("accepted");
}
