use super::*;
use http::Method;
use std::borrow::Cow;

/// A route as the table sees it, with a name to assert on.
struct Named {
    name: &'static str,
    m: RouteMatch,
}

impl Routable for Named {
    fn route_match(&self) -> &RouteMatch {
        &self.m
    }
}

fn rc(name: &'static str, host: Option<&str>, prefix: &str, methods: &[Method]) -> Named {
    let c = RouteConfig {
        name: name.into(),
        host: host.map(Into::into),
        path_prefix: prefix.into(),
        methods: methods.to_vec(),
        service: "svc".into(),
        strip_prefix: true,
        ..RouteConfig::default()
    };
    Named {
        name,
        m: RouteMatch::new(&c),
    }
}

fn build<const N: usize>(routes: [Named; N]) -> RouteTable<Named> {
    RouteTable::build(routes.into())
}

/// The name of the route a lookup found.
trait Found {
    fn found(&self, host: &str, path: &str, method: &Method) -> Option<&'static str>;
}

impl Found for RouteTable<Named> {
    fn found(&self, host: &str, path: &str, method: &Method) -> Option<&'static str> {
        match self.lookup(host, path, method) {
            Match::Found(i) => Some(self.routes()[i].name),
            _ => None,
        }
    }
}

#[test]
fn segment_boundaries_and_file_order() {
    let t = build([
        rc("users", None, "/api/users", &[]),
        rc("api", None, "/api", &[]),
        rc("root", None, "/", &[]),
    ]);
    let get = Method::GET;
    assert_eq!(t.found("x", "/api/users", &get), Some("users"));
    assert_eq!(t.found("x", "/api/users/42", &get), Some("users"));
    assert_eq!(t.found("x", "/api/usersX", &get), Some("api"));
    assert_eq!(t.found("x", "/api//users/1", &get), Some("users"));
    assert_eq!(t.found("x", "/other", &get), Some("root"));
    // earlier route wins even when a later one is more specific
    let t = build([
        rc("api", None, "/api", &[]),
        rc("users", None, "/api/users", &[]),
    ]);
    assert_eq!(t.found("x", "/api/users/1", &get), Some("api"));
}

#[test]
fn hosts_methods_and_405() {
    let t = build([
        rc("a", Some("api.example.com"), "/v1", &[Method::GET]),
        rc("w", Some("*.example.com"), "/v1", &[Method::POST]),
        rc("any", None, "/public", &[]),
    ]);
    assert_eq!(t.found("api.example.com", "/v1/x", &Method::GET), Some("a"));
    assert_eq!(
        t.found("api.example.com", "/v1/x", &Method::POST),
        Some("w")
    );
    assert_eq!(t.found("b.example.com", "/v1", &Method::POST), Some("w"));
    assert_eq!(t.found("example.com", "/v1", &Method::POST), None);
    assert_eq!(t.found("other.org", "/public/a", &Method::PUT), Some("any"));
    match t.lookup("api.example.com", "/v1", &Method::DELETE) {
        Match::MethodNotAllowed(allow) => assert_eq!(allow, "GET, POST"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        t.lookup("other.org", "/v1", &Method::GET),
        Match::NotFound
    ));
}

#[test]
fn dot_segments_and_escapes() {
    let t = build([rc("users", None, "/api/users", &[])]);
    let get = Method::GET;
    assert!(matches!(
        t.lookup("h", "/api/users/../admin", &get),
        Match::BadPath
    ));
    assert!(matches!(
        t.lookup("h", "/api/%2e%2E/admin", &get),
        Match::BadPath
    ));
    assert!(matches!(
        t.lookup("h", "/api/users/%zz", &get),
        Match::BadPath
    ));
    assert_eq!(t.found("h", "/api/%75sers/1", &get), Some("users"));
    assert_eq!(t.found("h", "/./api/users", &get), Some("users"));
}

#[test]
fn strip_prefix_keeps_query() {
    let t = build([rc("users", None, "/api/users", &[])]);
    let r = &t.routes()[0].m;
    assert_eq!(strip_prefix(r, "/api/users/42?x=1"), "/42?x=1");
    assert_eq!(strip_prefix(r, "/api/users"), "/");
    assert_eq!(strip_prefix(r, "/api/users?x=1"), "/?x=1");
    assert_eq!(strip_prefix(r, "/api//users/a/b"), "/a/b");
}

#[test]
fn host_normalisation() {
    assert_eq!(normalise_host("API.Example.com:8080"), "api.example.com");
    assert_eq!(normalise_host("[::1]:8080"), "[::1]");
    assert!(matches!(normalise_host("plain"), Cow::Borrowed("plain")));
}

fn conds(yaml: &str) -> Option<std::sync::Arc<Conditions>> {
    #[derive(serde::Deserialize)]
    struct Raw {
        path_regex: Option<String>,
        #[serde(default)]
        headers: std::collections::BTreeMap<String, conditions::RawCond>,
        #[serde(default)]
        query: std::collections::BTreeMap<String, conditions::RawCond>,
        #[serde(default)]
        cookies: std::collections::BTreeMap<String, conditions::RawCond>,
    }
    let raw: Raw = serde_yaml::from_str(yaml).expect("yaml");
    let mut errors = Vec::new();
    let c = Conditions::compile(
        raw.path_regex.as_deref(),
        &raw.headers,
        &raw.query,
        &raw.cookies,
        "routes[0]",
        &mut errors,
    );
    assert!(errors.is_empty(), "{errors:?}");
    c.map(std::sync::Arc::new)
}

fn rcc(name: &'static str, prefix: &str, methods: &[Method], yaml: &str) -> Named {
    let c = RouteConfig {
        name: name.into(),
        path_prefix: prefix.into(),
        methods: methods.to_vec(),
        conditions: conds(yaml),
        service: "svc".into(),
        ..RouteConfig::default()
    };
    Named {
        name,
        m: RouteMatch::new(&c),
    }
}

fn find(
    t: &RouteTable<Named>,
    path: &str,
    query: Option<&str>,
    headers: &[(&str, &str)],
    m: &Method,
) -> Option<&'static str> {
    let mut h = http::HeaderMap::new();
    for (k, v) in headers {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            http::HeaderValue::from_str(v).expect("value"),
        );
    }
    let view = RequestView {
        path,
        query,
        headers: &h,
    };
    match t.lookup_request("h", &view, m) {
        Match::Found(i) => Some(t.routes()[i].name),
        Match::MethodNotAllowed(a) => Some(if a.is_empty() { "405?" } else { "405" }),
        _ => None,
    }
}

#[test]
fn conditions_filter_candidates_in_file_order() {
    let get = Method::GET;
    let t = build([
        rcc("beta", "/api", &[], "headers: { X-Beta: \"yes\" }"),
        rcc(
            "mobile",
            "/api",
            &[],
            "headers: { User-Agent: { regex: \"(?i)mobile\" } }",
        ),
        rcc(
            "debug",
            "/api",
            &[],
            "query: { debug: { present: true }, v: \"2\" }",
        ),
        rcc("canary", "/api", &[], "cookies: { canary: \"1\" }"),
        rcc(
            "no-auth",
            "/api",
            &[],
            "headers: { Authorization: { present: false } }",
        ),
        rcc(
            "user",
            "/",
            &[Method::GET],
            "path_regex: \"^/users/(?<id>[0-9]+)$\"",
        ),
        rcc("api", "/api", &[], "{}"),
    ]);
    let auth = ("authorization", "Bearer x");
    assert_eq!(
        find(&t, "/api/x", None, &[("x-beta", "yes"), auth], &get),
        Some("beta")
    );
    assert_eq!(
        find(&t, "/api/x", None, &[("x-beta", "no"), auth], &get),
        Some("api")
    );
    assert_eq!(
        find(
            &t,
            "/api/x",
            None,
            &[("user-agent", "Foo MOBILE"), auth],
            &get
        ),
        Some("mobile")
    );
    assert_eq!(
        find(&t, "/api/x", Some("a=1&debug&v=2"), &[auth], &get),
        Some("debug")
    );
    assert_eq!(
        find(&t, "/api/x", Some("debug=1&v=3"), &[auth], &get),
        Some("api")
    );
    assert_eq!(
        find(&t, "/api/x", Some("v=%32&debug="), &[auth], &get),
        Some("debug"),
        "decoded"
    );
    assert_eq!(
        find(
            &t,
            "/api/x",
            None,
            &[("cookie", "a=b; canary=1"), auth],
            &get
        ),
        Some("canary")
    );
    assert_eq!(
        find(&t, "/api/x", None, &[("cookie", "canary=0"), auth], &get),
        Some("api")
    );
    assert_eq!(find(&t, "/api/x", None, &[], &get), Some("no-auth"));
    assert_eq!(find(&t, "/users/42", None, &[], &get), Some("user"));
    assert_eq!(find(&t, "/users/abc", None, &[], &get), None);
    // A route whose conditions fail is no candidate: no 405 from it either.
    assert_eq!(find(&t, "/users/42", None, &[], &Method::POST), Some("405"));
    assert_eq!(find(&t, "/users/x", None, &[], &Method::POST), None);
}

#[test]
fn rewrites_and_redirects_use_captures() {
    use super::rewrite::{RawRedirect, RawRewrite, Redirect, Rewrite};
    let mut errors = Vec::new();
    let rw: RawRewrite = serde_yaml::from_str(
        "{ path_regex: \"^/api/v1/users/(?<id>[0-9]+)(/.*)?$\", replacement: \"/users/{id}{2}\" }",
    )
    .expect("yaml");
    let rw = Rewrite::compile(&rw, "routes[0]", &mut errors).expect("valid");
    assert_eq!(
        rw.apply("/api/v1/users/42", Some("x=1")).as_deref(),
        Some("/users/42?x=1")
    );
    assert_eq!(
        rw.apply("/api/v1/users/42/posts", None).as_deref(),
        Some("/users/42/posts")
    );
    assert_eq!(rw.apply("/other", None), None);
    let bad: RawRewrite =
        serde_yaml::from_str("{ path_regex: \"^/(?<id>x)$\", replacement: \"/{nope}\" }")
            .expect("yaml");
    assert!(Rewrite::compile(&bad, "routes[1]", &mut errors).is_none());
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "routes[1].rewrite.replacement");
    assert!(
        errors[0].message.contains("{nope} is not defined"),
        "{}",
        errors[0].message
    );
    let bad: RawRewrite =
        serde_yaml::from_str("{ path_regex: \"(\", replacement: \"/\" }").expect("yaml");
    assert!(Rewrite::compile(&bad, "routes[2]", &mut errors).is_none());
    assert_eq!(errors[1].path, "routes[2].rewrite.path_regex");

    let mut errors = Vec::new();
    let r: RawRedirect =
        serde_yaml::from_str("{ to: \"https://{host}{path}\", status: 308 }").expect("yaml");
    let r = Redirect::compile(&r, &[], "routes[0]", &mut errors).expect("valid");
    assert_eq!(r.status, 308);
    assert_eq!(
        r.location("a.example", "/x", Some("q=1"), None),
        "https://a.example/x?q=1"
    );
    let re = regex::Regex::new("^/old/(?<id>[0-9]+)$").expect("regex");
    let names = super::rewrite::capture_names(&re);
    let r: RawRedirect = serde_yaml::from_str("{ to: \"/new/{id}\" }").expect("yaml");
    let r = Redirect::compile(&r, &names, "routes[0]", &mut errors).expect("valid");
    assert_eq!(r.status, 302);
    let caps = re.captures("/old/7");
    assert_eq!(r.location("h", "/old/7", None, caps.as_ref()), "/new/7");
    let r: RawRedirect = serde_yaml::from_str("{ to: \"/new/{id}\", status: 200 }").expect("yaml");
    assert!(Redirect::compile(&r, &[], "routes[3]", &mut errors).is_none());
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["routes[3].redirect.status", "routes[3].redirect.to"]
    );
}
