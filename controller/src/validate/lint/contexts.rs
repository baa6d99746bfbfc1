//! Where nginx accepts each common directive, and how many arguments it takes: the table behind
//! rules SB106 (not allowed here) and SB108 (wrong number of arguments). It mirrors the
//! `NGX_*_CONF` masks and `NGX_CONF_TAKE*` flags of nginx and its usual modules (1.22 onwards);
//! a directive missing from it is reported by SB107 as a warning and left to `nginx -t`.

use super::index::Ctx;

const M: u32 = 1 << 0;
const E: u32 = 1 << 1;
const H: u32 = 1 << 2;
const S: u32 = 1 << 3;
const L: u32 = 1 << 4;
const SIF: u32 = 1 << 5;
const LIF: u32 = 1 << 6;
const LMT: u32 = 1 << 7;
const U: u32 = 1 << 8;
const ST: u32 = 1 << 9;
const SS: u32 = 1 << 10;
const SU: u32 = 1 << 11;
const ML: u32 = 1 << 12;
const MS: u32 = 1 << 13;
const HSL: u32 = H | S | L;
const HSLI: u32 = H | S | L | LIF;
const REWRITE: u32 = S | L | SIF | LIF;
const STREAM: u32 = ST | SS;
const SSL: u32 = H | S | ST | SS | ML | MS;
const EVERY: u32 = M | E | H | S | L | SIF | LIF | LMT | U | ST | SS | SU | ML | MS;

/// Arguments without an upper bound.
pub const MANY: u8 = u8::MAX;

/// What nginx accepts for one directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    contexts: u32,
    /// Fewest arguments.
    pub min: u8,
    /// Most arguments ([`MANY`] for no bound).
    pub max: u8,
    /// Whether the directive opens a block.
    pub block: bool,
}

impl Spec {
    /// Whether the directive may appear in `ctx`.
    pub fn allowed_in(&self, ctx: Ctx) -> bool {
        bit(ctx) & self.contexts != 0
    }

    /// The contexts it may appear in, for messages.
    pub fn allowed(&self) -> Vec<&'static str> {
        ALL_CTX
            .iter()
            .filter(|c| self.allowed_in(**c))
            .map(|c| c.describe())
            .collect()
    }

    /// "1", "1 or 2", "2 or more": for messages.
    pub fn describe_args(&self) -> String {
        match (self.min, self.max) {
            (a, b) if a == b => a.to_string(),
            (a, MANY) => format!("{a} or more"),
            (a, b) if b == a + 1 => format!("{a} or {b}"),
            (a, b) => format!("{a} to {b}"),
        }
    }
}

const ALL_CTX: [Ctx; 14] = [
    Ctx::Main,
    Ctx::Events,
    Ctx::Http,
    Ctx::Server,
    Ctx::Location,
    Ctx::IfInServer,
    Ctx::IfInLocation,
    Ctx::LimitExcept,
    Ctx::Upstream,
    Ctx::Stream,
    Ctx::StreamServer,
    Ctx::StreamUpstream,
    Ctx::Mail,
    Ctx::MailServer,
];

fn bit(ctx: Ctx) -> u32 {
    match ctx {
        Ctx::Main => M,
        Ctx::Events => E,
        Ctx::Http => H,
        Ctx::Server => S,
        Ctx::Location => L,
        Ctx::IfInServer => SIF,
        Ctx::IfInLocation => LIF,
        Ctx::LimitExcept => LMT,
        Ctx::Upstream => U,
        Ctx::Stream => ST,
        Ctx::StreamServer => SS,
        Ctx::StreamUpstream => SU,
        Ctx::Mail => ML,
        Ctx::MailServer => MS,
        Ctx::Opaque => 0,
    }
}

const fn d(contexts: u32, min: u8, max: u8) -> Spec {
    Spec {
        contexts,
        min,
        max,
        block: false,
    }
}

const fn b(contexts: u32, min: u8, max: u8) -> Spec {
    Spec {
        contexts,
        min,
        max,
        block: true,
    }
}

/// The spec of `name` as used in `ctx`, or `None` when the table does not know the directive.
/// `server` is two directives in nginx: a block in http/stream/mail and a line in an upstream.
pub fn spec(name: &str, ctx: Ctx) -> Option<Spec> {
    if name == "server" {
        return Some(match ctx {
            Ctx::Upstream | Ctx::StreamUpstream => d(U | SU, 1, MANY),
            _ => b(H | ST | ML, 0, 0),
        });
    }
    let spec = match name {
        // core, main and events
        "daemon"
        | "master_process"
        | "pid"
        | "lock_file"
        | "pcre_jit"
        | "timer_resolution"
        | "working_directory"
        | "worker_priority"
        | "worker_processes"
        | "worker_rlimit_core"
        | "worker_rlimit_nofile"
        | "worker_shutdown_timeout"
        | "load_module"
        | "env"
        | "debug_points"
        | "ssl_engine" => d(M, 1, 1),
        "user" | "thread_pool" => d(M, 1, 2),
        "worker_cpu_affinity" => d(M, 1, MANY),
        "events" | "http" | "stream" | "mail" => b(M, 0, 0),
        "worker_connections"
        | "use"
        | "multi_accept"
        | "accept_mutex"
        | "accept_mutex_delay"
        | "worker_aio_requests"
        | "debug_connection" => d(E, 1, 1),
        "include" => d(EVERY, 1, 1),
        "error_log" => d(M | HSL | STREAM | ML | MS, 1, MANY),
        // blocks of http and stream
        "upstream" => b(H | ST, 1, 1),
        "map" | "split_clients" => b(H | ST, 2, 2),
        "geo" => b(H | ST, 1, 2),
        "charset_map" => b(H, 2, 2),
        "types" => b(HSL, 0, 0),
        "location" => b(S | L, 1, 2),
        "if" => b(S | L, 1, MANY),
        "limit_except" => b(L, 1, MANY),
        // http core
        "listen" => d(S | SS | MS, 1, MANY),
        "server_name" => d(S | MS, 1, MANY),
        "root" | "sendfile" | "limit_rate" | "limit_rate_after" | "charset" | "gzip" | "ssi" => {
            d(HSLI, 1, 1)
        }
        "alias" | "fastcgi_split_path_info" => d(L, 1, 1),
        "internal" => d(L, 0, 0),
        "index"
        | "gzip_types"
        | "gzip_disable"
        | "gzip_proxied"
        | "proxy_cache_bypass"
        | "proxy_cache_methods"
        | "proxy_cache_use_stale"
        | "proxy_cache_valid"
        | "proxy_ignore_headers"
        | "proxy_no_cache"
        | "ssi_types"
        | "sub_filter_types"
        | "charset_types" => d(HSL, 1, MANY),
        "try_files" => d(S | L, 2, MANY),
        "error_page" => d(HSLI, 2, MANY),
        "add_header" | "add_trailer" => d(HSLI, 2, 3),
        "expires" => d(HSLI, 1, 2),
        "return" => d(REWRITE | SS, 1, 2),
        "rewrite" => d(REWRITE, 2, 3),
        "set" => d(REWRITE | SS, 2, 2),
        "break" => d(REWRITE, 0, 0),
        "rewrite_log" | "uninitialized_variable_warn" => d(H | REWRITE, 1, 1),
        "access_log" => d(HSLI | LMT | STREAM, 1, MANY),
        "log_format" => d(H | ST, 2, MANY),
        "allow" | "deny" => d(HSL | LMT | STREAM, 1, 1),
        "auth_basic" | "auth_basic_user_file" => d(HSL | LMT, 1, 1),
        "client_header_buffer_size"
        | "client_header_timeout"
        | "ignore_invalid_headers"
        | "merge_slashes"
        | "underscores_in_headers"
        | "ssl_stapling"
        | "ssl_stapling_verify"
        | "ssl_buffer_size"
        | "ssl_early_data"
        | "ssl_reject_handshake"
        | "http2" => d(H | S, 1, 1),
        "large_client_header_buffers" => d(H | S, 2, 2),
        "server_names_hash_bucket_size" | "server_names_hash_max_size" => d(H, 1, 1),
        "variables_hash_bucket_size"
        | "variables_hash_max_size"
        | "map_hash_bucket_size"
        | "map_hash_max_size" => d(H | ST, 1, 1),
        "limit_req_zone" => d(H, 3, 4),
        "limit_conn_zone" => d(H | ST, 2, 2),
        "limit_conn" => d(HSL | STREAM, 2, 2),
        "limit_conn_log_level" => d(HSL | STREAM, 1, 1),
        "limit_req" => d(HSL, 1, 3),
        "proxy_cache_path" => d(H, 2, MANY),
        "keepalive_timeout" => d(HSL | U, 1, 2),
        "keepalive_requests" | "keepalive_time" => d(HSL | U, 1, 1),
        "keepalive_disable" | "open_file_cache" | "disable_symlinks" => d(HSL, 1, 2),
        "client_body_temp_path" | "proxy_temp_path" => d(HSL, 1, 4),
        "absolute_redirect"
        | "aio"
        | "autoindex"
        | "chunked_transfer_encoding"
        | "client_body_buffer_size"
        | "client_body_in_file_only"
        | "client_body_timeout"
        | "client_max_body_size"
        | "default_type"
        | "directio"
        | "etag"
        | "gunzip"
        | "gzip_comp_level"
        | "gzip_http_version"
        | "gzip_min_length"
        | "gzip_vary"
        | "if_modified_since"
        | "limit_conn_status"
        | "limit_req_log_level"
        | "limit_req_status"
        | "lingering_close"
        | "lingering_time"
        | "lingering_timeout"
        | "log_not_found"
        | "log_subrequest"
        | "max_ranges"
        | "mirror"
        | "mirror_request_body"
        | "open_file_cache_errors"
        | "open_file_cache_min_uses"
        | "open_file_cache_valid"
        | "port_in_redirect"
        | "postpone_output"
        | "real_ip_header"
        | "real_ip_recursive"
        | "recursive_error_pages"
        | "reset_timedout_connection"
        | "satisfy"
        | "send_timeout"
        | "sendfile_max_chunk"
        | "server_name_in_redirect"
        | "server_tokens"
        | "set_real_ip_from"
        | "sub_filter_once"
        | "tcp_nopush"
        | "types_hash_bucket_size"
        | "types_hash_max_size"
        | "auth_request"
        | "fastcgi_index"
        | "fastcgi_read_timeout"
        | "grpc_read_timeout"
        | "proxy_buffering"
        | "proxy_busy_buffers_size"
        | "proxy_cache"
        | "proxy_cache_background_update"
        | "proxy_cache_key"
        | "proxy_cache_lock"
        | "proxy_cache_lock_timeout"
        | "proxy_cache_min_uses"
        | "proxy_cache_revalidate"
        | "proxy_headers_hash_bucket_size"
        | "proxy_headers_hash_max_size"
        | "proxy_hide_header"
        | "proxy_http_version"
        | "proxy_ignore_client_abort"
        | "proxy_intercept_errors"
        | "proxy_limit_rate"
        | "proxy_max_temp_file_size"
        | "proxy_method"
        | "proxy_pass_header"
        | "proxy_pass_request_body"
        | "proxy_pass_request_headers"
        | "proxy_read_timeout"
        | "proxy_request_buffering"
        | "proxy_send_timeout"
        | "proxy_set_body" => d(HSL, 1, 1),
        "gzip_buffers" | "output_buffers" | "proxy_buffers" | "proxy_set_header"
        | "grpc_set_header" | "sub_filter" | "auth_request_set" => d(HSL, 2, 2),
        "proxy_redirect" | "proxy_cookie_domain" | "proxy_cookie_path" => d(HSL, 1, 2),
        "fastcgi_param" | "uwsgi_param" | "scgi_param" => d(HSL, 2, 3),
        "proxy_pass" => d(L | LIF | LMT | SS, 1, 1),
        "fastcgi_pass" | "grpc_pass" | "uwsgi_pass" | "scgi_pass" | "memcached_pass" => {
            d(L | LIF, 1, 1)
        }
        "stub_status" => d(S | L, 0, 1),
        "valid_referers" => d(S | L, 1, MANY),
        // shared by http and stream proxying
        "proxy_connect_timeout"
        | "proxy_buffer_size"
        | "proxy_next_upstream_timeout"
        | "proxy_next_upstream_tries"
        | "proxy_socket_keepalive"
        | "proxy_ssl_certificate"
        | "proxy_ssl_certificate_key"
        | "proxy_ssl_name"
        | "proxy_ssl_server_name"
        | "proxy_ssl_session_reuse"
        | "proxy_ssl_trusted_certificate"
        | "proxy_ssl_verify"
        | "proxy_ssl_verify_depth"
        | "proxy_ssl_ciphers"
        | "resolver_timeout"
        | "tcp_nodelay" => d(HSL | STREAM, 1, 1),
        "proxy_bind" => d(HSL | STREAM, 1, 2),
        "proxy_next_upstream" | "proxy_ssl_protocols" => d(HSL | STREAM, 1, MANY),
        "resolver" => d(HSL | STREAM | U, 1, MANY),
        "proxy_protocol"
        | "proxy_timeout"
        | "proxy_ssl"
        | "ssl_preread"
        | "proxy_download_rate"
        | "proxy_upload_rate"
        | "proxy_responses"
        | "proxy_requests"
        | "proxy_half_close"
        | "ssl_handshake_timeout"
        | "preread_timeout"
        | "preread_buffer_size" => d(STREAM, 1, 1),
        // TLS
        "ssl_certificate"
        | "ssl_certificate_key"
        | "ssl_ciphers"
        | "ssl_client_certificate"
        | "ssl_dhparam"
        | "ssl_ecdh_curve"
        | "ssl_password_file"
        | "ssl_prefer_server_ciphers"
        | "ssl_session_tickets"
        | "ssl_session_timeout"
        | "ssl_trusted_certificate"
        | "ssl_verify_client"
        | "ssl_verify_depth"
        | "ssl_crl" => d(SSL, 1, 1),
        "ssl_protocols" => d(SSL, 1, MANY),
        "ssl_session_cache" => d(SSL, 1, 2),
        "ssl_conf_command" => d(SSL, 2, 2),
        // upstream
        "ip_hash" => d(U, 0, 0),
        "keepalive" => d(U, 1, 1),
        "least_conn" => d(U | SU, 0, 0),
        "hash" | "zone" => d(U | SU, 1, 2),
        "random" => d(U | SU, 0, 2),
        _ => return None,
    };
    Some(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_set_header_is_not_allowed_in_if() {
        let s = spec("proxy_set_header", Ctx::IfInLocation).unwrap();
        assert!(!s.allowed_in(Ctx::IfInLocation));
        assert!(s.allowed_in(Ctx::Location));
        assert!(
            spec("proxy_pass", Ctx::Location)
                .unwrap()
                .allowed_in(Ctx::IfInLocation)
        );
    }

    #[test]
    fn server_means_two_things() {
        assert!(!spec("server", Ctx::Upstream).unwrap().block);
        assert!(spec("server", Ctx::Http).unwrap().block);
    }

    #[test]
    fn argument_counts_read_like_nginx_docs() {
        assert_eq!(
            spec("proxy_set_header", Ctx::Server)
                .unwrap()
                .describe_args(),
            "2"
        );
        assert_eq!(
            spec("listen", Ctx::Server).unwrap().describe_args(),
            "1 or more"
        );
        assert_eq!(
            spec("location", Ctx::Server).unwrap().describe_args(),
            "1 or 2"
        );
        assert_eq!(
            spec("proxy_temp_path", Ctx::Server)
                .unwrap()
                .describe_args(),
            "1 to 4"
        );
    }
}
