use super::config::{parse_digest, validate};
use super::*;
use serde_yaml::Value;

fn yaml(s: &str) -> Option<Value> {
    Some(serde_yaml::from_str(s).unwrap())
}

fn load(consumers: &str) -> Result<ConsumersConfig, Vec<String>> {
    let mut errors = Vec::new();
    let c = validate(yaml(consumers), None, &mut errors);
    if errors.is_empty() {
        Ok(c)
    } else {
        Err(errors.iter().map(|e| e.to_string()).collect())
    }
}

#[test]
fn hash_key_is_the_hex_sha256() {
    // printf s3cret | sha256sum
    assert_eq!(
        hash_key("s3cret"),
        "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0"
    );
    assert_eq!(
        parse_digest(&hash_key("s3cret")),
        Some(sha256(&[b"s3cret"]))
    );
    assert_eq!(parse_digest("abc"), None);
    assert_eq!(parse_digest(&"g".repeat(64)), None);
    assert!(parse_digest(&hash_key("x").to_uppercase()).is_some());
}

#[test]
fn api_keys_find_their_consumer_among_ten_thousand() {
    let mut config = ConsumersConfig::default();
    for i in 0..10_000 {
        config.consumers.push(ConsumerConfig {
            name: format!("c{i}"),
            groups: if i % 2 == 0 {
                vec!["even".into()]
            } else {
                vec![]
            },
            api_keys: vec![sha256(&[format!("key-{i}").as_bytes()])],
            basic: None,
        });
    }
    let consumers = Consumers::new(&config);
    assert_eq!(consumers.len(), 10_000);
    let c = consumers.by_api_key(b"key-4242").expect("known key");
    assert_eq!(&*c.name, "c4242");
    assert_eq!(c.header, "c4242");
    assert_eq!(c.groups_header.as_ref().unwrap(), "even");
    assert!(c.in_any(&[Arc::from("even")]));
    assert!(!c.in_any(&[Arc::from("odd")]));
    assert!(consumers.by_api_key(b"key-10000").is_none());
    assert!(consumers.by_api_key(b"").is_none());
    assert!(consumers.by_api_key(b"key-4242 ").is_none());
}

#[test]
fn basic_credentials_are_parsed_strictly() {
    use base64::Engine as _;
    let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert_eq!(
        basic_credentials(format!("Basic {}", enc("ann:pw:with:colons")).as_bytes()),
        Some(("ann".into(), "pw:with:colons".into()))
    );
    assert_eq!(
        basic_credentials(format!("basic  {} ", enc("ann:")).as_bytes()),
        Some(("ann".into(), String::new()))
    );
    assert_eq!(
        basic_credentials(format!("Bearer {}", enc("a:b")).as_bytes()),
        None
    );
    assert_eq!(basic_credentials(b"Basic !!!"), None);
    assert_eq!(
        basic_credentials(format!("Basic {}", enc(":pw")).as_bytes()),
        None
    );
    assert_eq!(
        basic_credentials(format!("Basic {}", enc("nocolon")).as_bytes()),
        None
    );
    assert_eq!(basic_credentials(b"Basic"), None);
}

#[tokio::test]
async fn passwords_verify_with_bcrypt_and_argon2_and_repeat_from_the_cache() {
    use base64::Engine as _;
    let header = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let bcrypt_hash = bcrypt::hash("right", 4).unwrap();
    let argon = hash_password("other", false).unwrap();
    assert!(argon.starts_with("$argon2id$"));
    let config = load(&format!(
        "ann: {{ basic: {{ username: ann, password_hash: '{bcrypt_hash}' }} }}\n\
         bob: {{ groups: [ops], basic: {{ username: bob, password_hash: '{argon}' }} }}\n"
    ))
    .unwrap();
    let consumers = Consumers::new(&config);
    let c = consumers
        .by_basic(header("ann", "right").as_bytes())
        .await
        .unwrap();
    assert_eq!(&*c.name, "ann");
    let c = consumers
        .by_basic(header("bob", "other").as_bytes())
        .await
        .unwrap();
    assert_eq!(&*c.name, "bob");
    for (u, p) in [
        ("ann", "wrong"),
        ("bob", "right"),
        ("carl", "right"),
        ("ann", ""),
    ] {
        assert_eq!(
            consumers
                .by_basic(header(u, p).as_bytes())
                .await
                .unwrap_err(),
            BasicError::Invalid,
            "{u}:{p}"
        );
    }
    assert_eq!(
        consumers.by_basic(b"Bearer x").await.unwrap_err(),
        BasicError::Missing
    );
    // A repeat is answered from the verified cache: fast even for argon2.
    let t = Instant::now();
    for _ in 0..100 {
        consumers
            .by_basic(header("bob", "other").as_bytes())
            .await
            .unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // And a wrong password is never taken from it.
    assert!(consumers
        .by_basic(header("bob", "other!").as_bytes())
        .await
        .is_err());
}

#[test]
fn bad_consumers_are_refused_with_their_paths() {
    let errs = load(
        "a: { api_keys: [abc], basic: { username: a, password_hash: 'plain' } }\n\
         b: { groups: ['bad group'], api_keys: ['1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0'] }\n\
         c: { api_keys: ['1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0'], basic: { username: u, password_hash: '$2b$04$invalid' } }\n\
         d: { basic: { username: u, password_hash: '$argon2id$v=19$m=19456,t=2,p=1$bad' } }\n\
         e: { colour: red }\n",
    )
    .unwrap_err();
    for want in [
        "consumers.a.api_keys[0]",
        "consumers.a.basic.password_hash",
        "consumers.b.groups[0]",
        "consumers.c.api_keys[0]: the same key as consumers.b.api_keys[0]",
        "consumers.c.basic.password_hash",
        "consumers.d.basic.username",
        "consumers.d.basic.password_hash",
        "consumers.e",
    ] {
        assert!(errs.iter().any(|e| e.contains(want)), "{want}: {errs:#?}");
    }
    // Nothing of a key or hash in an error.
    assert!(!errs.iter().any(|e| e.contains("plain")), "{errs:#?}");
}

#[test]
fn a_consumers_file_adds_consumers_and_names_its_errors() {
    let dir = std::env::temp_dir().join(format!("gh-consumers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("consumers.yaml");
    std::fs::write(
        &file,
        format!(
            "filed: {{ groups: [partners], api_keys: ['{}'] }}\n",
            hash_key("k")
        ),
    )
    .unwrap();
    let mut errors = Vec::new();
    let c = validate(
        yaml("inline: { groups: [ops] }"),
        Some(Value::String(file.display().to_string())),
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:?}");
    let names: Vec<_> = c.consumers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["filed", "inline"]);
    assert_eq!(
        c.groups().into_iter().collect::<Vec<_>>(),
        ["ops", "partners"]
    );
    assert!(c.any_api_key() && !c.any_basic());

    std::fs::write(&file, "inline: { api_keys: [nothex] }\n").unwrap();
    let mut errors = Vec::new();
    validate(
        yaml("inline: {}"),
        Some(Value::String(file.display().to_string())),
        &mut errors,
    );
    let errs: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let at = format!("consumers_file({})", file.display());
    assert!(
        errs.iter()
            .any(|e| e.contains(&format!("{at}.inline.api_keys[0]"))),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("duplicate consumer \"inline\"")),
        "{errs:#?}"
    );
    let mut errors = Vec::new();
    validate(
        None,
        Some(Value::String("/nonexistent/c.yaml".into())),
        &mut errors,
    );
    assert!(
        errors[0].to_string().contains("consumers_file"),
        "{errors:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn constant_time_compare_is_a_compare() {
    assert!(ct_eq(b"", b""));
    assert!(ct_eq(b"abcdefghij", b"abcdefghij"));
    assert!(!ct_eq(b"abcdefghij", b"abcdefghiJ"));
    assert!(!ct_eq(b"Abcdefghij", b"abcdefghij"));
    assert!(!ct_eq(b"abc", b"abcd"));
    let a = [7u8; 33];
    let mut b = a;
    b[32] = 8;
    assert!(!ct_eq(&a, &b));
}
