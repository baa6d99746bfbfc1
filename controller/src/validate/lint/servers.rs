//! SB105: two http `server` blocks claiming the same `listen` address and `server_name`. nginx only
//! warns ("conflicting server name ... ignored") and silently serves every such request from the
//! first block, so the second block is dead config that looks alive: a classic way for a change to
//! "do nothing" in production. Two `default_server`s on one address are refused by nginx outright.

use std::borrow::Cow;
use std::collections::HashMap;

use super::address::{self, Address};
use super::index::{Ctx, Index, Item};
use crate::validate::diagnostic::Diagnostic;

/// Where a pair was first claimed.
struct First<'a> {
    file: &'a str,
    line: u32,
}

/// Runs SB105.
pub fn check(index: &Index<'_>, out: &mut Vec<Diagnostic>) {
    // Per listen address, the server names claimed on it (lowercased; borrowed when already).
    let mut names: HashMap<String, HashMap<Cow<'_, str>, First<'_>>> = HashMap::new();
    let mut defaults: HashMap<String, First<'_>> = HashMap::new();
    for (i, server) in index.named("server", Ctx::Http) {
        let mut listens = Vec::new();
        for listen in index.children(i).filter(|c| c.dir.name == "listen") {
            let Some(addr) = listen.dir.args.first() else {
                continue;
            };
            let key = normalize_listen(&addr.value);
            let is_default = listen
                .dir
                .args
                .iter()
                .skip(1)
                .any(|a| a.value == "default_server" || a.value == "default");
            if is_default {
                if let Some(first) = defaults.get(&key) {
                    out.push(Diagnostic::error(
                        "SB105",
                        listen.file,
                        listen.dir.span.line,
                        listen.dir.span.col,
                        format!(
                            "a duplicate default server for {key}: the first is at {}:{}",
                            first.file, first.line
                        ),
                    ));
                } else {
                    defaults.insert(
                        key.clone(),
                        First {
                            file: listen.file,
                            line: listen.dir.span.line,
                        },
                    );
                }
            }
            listens.push(key);
        }
        if listens.is_empty() {
            listens.push("*:80".to_string());
        }
        let mut server_names: Vec<(&Item<'_>, Cow<'_, str>)> = index
            .children(i)
            .filter(|c| c.dir.name == "server_name")
            .flat_map(|c| c.dir.args.iter().map(move |a| (c, lowercase(&a.value))))
            .collect();
        if server_names.is_empty() {
            server_names.push((server, Cow::Borrowed("")));
        }
        for listen in &listens {
            if !names.contains_key(listen) {
                names.insert(listen.clone(), HashMap::new());
            }
            let Some(claimed) = names.get_mut(listen) else {
                continue;
            };
            for (item, name) in &server_names {
                if let Some(first) = claimed.get(name) {
                    out.push(Diagnostic::error(
                        "SB105",
                        item.file,
                        item.dir.span.line,
                        item.dir.span.col,
                        format!(
                            "conflicting server name \"{name}\" on {listen}: already claimed at \
                             {}:{}; nginx ignores this block for that name, so it never serves \
                             those requests",
                            first.file, first.line
                        ),
                    ));
                } else {
                    claimed.insert(
                        name.clone(),
                        First {
                            file: item.file,
                            line: item.dir.span.line,
                        },
                    );
                }
            }
        }
    }
}

/// `text` lowercased, borrowed when it has nothing to lowercase (the usual case).
fn lowercase(text: &str) -> Cow<'_, str> {
    if text
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.to_lowercase())
    }
}

/// `80`, `*:80` and `0.0.0.0:80` are one address to nginx; `[::]:80` is another.
fn normalize_listen(value: &str) -> String {
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return format!("*:{value}");
    }
    match address::split(value) {
        Ok(Address::Inet {
            host,
            port,
            v6: false,
        }) if port.is_none() && !host.contains('.') && host != "*" && host != "localhost" => {
            format!("*:{host}")
        }
        Ok(Address::Inet { host, port, v6 }) => {
            let host = if host == "0.0.0.0" { "*" } else { host };
            let port = port.unwrap_or("80");
            if v6 {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        }
        _ => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms_normalise() {
        assert_eq!(normalize_listen("80"), "*:80");
        assert_eq!(normalize_listen("*:80"), "*:80");
        assert_eq!(normalize_listen("0.0.0.0:80"), "*:80");
        assert_eq!(normalize_listen("127.0.0.1"), "127.0.0.1:80");
        assert_eq!(normalize_listen("[::]:8080"), "[::]:8080");
        assert_eq!(normalize_listen("unix:/run/x.sock"), "unix:/run/x.sock");
    }
}
