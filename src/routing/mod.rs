//! The compiled route table (`request_filter`).
//!
//! Routes are compiled once per config load into one segment trie per exact host (plus
//! one for every other host). A lookup walks the request path's segments once, so its
//! cost depends on the path's depth, not on how many routes there are; "first match in
//! file order" is kept by storing route indices and taking the smallest that matches.
//!
//! A route may add conditions ([`conditions`]): headers, query parameters, cookies and a
//! path regex. They filter the candidates the trie found; precedence stays "first route
//! in file order whose host, prefix and conditions match" (then its methods decide
//! between it and a 405; a route whose conditions fail is no candidate at all).
//!
//! Path prefixes match on segment boundaries: `/api/users` matches `/api/users` and
//! `/api/users/42`, never `/api/usersX`. Empty and `.` segments are ignored, segments with
//! percent-escapes are decoded before comparing, and a `..` segment (literal or encoded)
//! makes the request a 400: the gateway never routes a path an upstream would resolve
//! to somewhere else.
//!
//! The table holds the compiled [`Route`]s themselves (each owning its whole policy), so
//! a lookup's answer is the route; the table only needs each route's [`RouteMatch`].

pub mod conditions;
pub mod config;
pub mod rewrite;
pub mod route;
mod table;

pub use conditions::{Conditions, RequestView};
pub use config::{validate_routes, AuthMethodConfig, Names, RouteConfig, RoutePolicy, SplitSticky};
pub use route::{AuthMethod, Route, RouteAuth, Split};
pub use table::{normalise_host, strip_prefix, Match, Routable, RouteMatch, RouteTable};

#[cfg(test)]
mod tests;
