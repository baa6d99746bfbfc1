//! How the sandbox treats a directive by its name: blocks whose children are data, modules
//! that run code while nginx reads the config, directives that write files, resolve host names
//! or read TLS files at `-t` time. The tables the rewrite plan is driven by, in one place.

/// Blocks whose children are data (`map` entries, MIME types…), never directives to rewrite.
const OPAQUE_BLOCKS: &[&str] = &[
    "map",
    "geo",
    "types",
    "split_clients",
    "charset_map",
    "match",
];

/// Modules (by file name prefix) that run code from the config while nginx reads it: Perl's
/// `BEGIN` blocks and `perl_require`, Lua's `init_by_lua*`. A bundle must not run code on the
/// validating machine, so the sandbox never loads them.
pub(super) const CODE_MODULES: &[&str] = &[
    "ngx_http_perl_module",
    "ngx_http_lua_module",
    "ngx_stream_lua_module",
];

/// Whether a block's children are data rather than directives.
pub(crate) fn is_opaque(name: &str) -> bool {
    OPAQUE_BLOCKS.contains(&name)
}

/// Directives that name a file or directory nginx creates or opens for writing at `-t` time.
pub(super) const WRITE_DIRS: &[&str] = &[
    "client_body_temp_path",
    "proxy_temp_path",
    "fastcgi_temp_path",
    "uwsgi_temp_path",
    "scgi_temp_path",
    "proxy_cache_path",
    "fastcgi_cache_path",
    "uwsgi_cache_path",
    "scgi_cache_path",
];

/// Directives whose target nginx resolves as a host name when it reads the config.
pub(super) const PASS_DIRECTIVES: &[&str] = &[
    "proxy_pass",
    "fastcgi_pass",
    "uwsgi_pass",
    "scgi_pass",
    "grpc_pass",
    "memcached_pass",
];

/// What a stand-in file for a missing TLS file must contain for nginx to load it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// Certificate and matching key in one PEM (serves as either).
    CertAndKey,
    /// A certificate revocation list.
    Crl,
    /// Diffie-Hellman parameters.
    DhParams,
    /// A passphrase file.
    Password,
    /// An 80-byte session ticket key.
    TicketKey,
}

/// The stand-in kind for a directive that reads a TLS file at `-t` time, if it is one.
pub fn placeholder_kind(name: &str) -> Option<Placeholder> {
    let base = ["proxy_", "grpc_", "uwsgi_"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name);
    Some(match base {
        "ssl_certificate"
        | "ssl_certificate_key"
        | "ssl_trusted_certificate"
        | "ssl_client_certificate" => Placeholder::CertAndKey,
        "ssl_crl" => Placeholder::Crl,
        "ssl_dhparam" => Placeholder::DhParams,
        "ssl_password_file" => Placeholder::Password,
        "ssl_session_ticket_key" => Placeholder::TicketKey,
        _ => return None,
    })
}
