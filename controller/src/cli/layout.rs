//! `--config-root` and `--image-files`: what the bundle stands for on the proxy, shared by the
//! commands that validate (`validate`, `local`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use switchback::validate::paths::DEFAULT_CONFIG_ROOT;
use switchback::validate::sandbox::{Nginx, image_files};
use switchback::validate::{ConfigRoot, ProxyLayout};

#[derive(Args, Clone)]
pub(crate) struct LayoutArgs {
    /// The directory the config stands for on the proxy: absolute paths below it (`include
    /// /etc/nginx/conf.d/*.conf;`) name the config's own files.
    #[arg(long, default_value = DEFAULT_CONFIG_ROOT)]
    pub(crate) config_root: String,
    /// A directory holding the files the proxy image provides below the config root
    /// (`mime.types`, `fastcgi_params`, snippets…); default: the packaged files beside the
    /// `nginx -t` binary's own nginx.conf.
    #[arg(long, value_name = "DIR")]
    pub(crate) image_files: Option<PathBuf>,
}

impl LayoutArgs {
    /// The layout, the image's files read now (from `--image-files`, else `nginx`'s packaged).
    pub(crate) fn layout(&self, nginx: Option<&Nginx>) -> anyhow::Result<ProxyLayout> {
        let config_root = ConfigRoot::new(&self.config_root).context("--config-root")?;
        let image = match &self.image_files {
            Some(dir) => image_files::named(dir)?,
            None => Default::default(),
        };
        Ok(ProxyLayout { config_root, image }.or_packaged(nginx))
    }
}
