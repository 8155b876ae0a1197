//! Kind `svn` (SVN Repo): a hostname, and the `svn propset svn:externals` line that makes
//! every checkout of the repository fetch an external from it — so each checkout looks the
//! hostname up, and the lookup is the hit.

use serde_json::{Map, Value};

use super::{always_alert, gif_answer, no_params, renders, Kind, Site};
use crate::model::{Channel, Token};

pub static KIND: Kind = Kind {
    name: "svn",
    human_name: "SVN Repo",
    channel: Channel::Dns,
    create: no_params,
    describe,
    artefact: None,
    dns_encoding: None,
    judge: always_alert,
    http_answer: gif_answer,
};

fn describe(token: &Token, site: &Site, out: &mut Map<String, Value>) {
    let line = format!("svn propset svn:externals \"extras http://{}/svn/extras\" .", site.hostname(&token.id));
    renders(out, KIND.name, line);
}
