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
