//! Kind `svn` (SVN Repo): a hostname, and the `svn propset svn:externals` line that makes
//! every checkout of the repository fetch an external from it — so each checkout looks the
//! hostname up, and the lookup is the hit.

use super::{Kind, KindView, ViewContext};
use crate::model::{Channel, Token};

pub struct Svn;

impl Kind for Svn {
    fn name(&self) -> &'static str {
        "svn"
    }

    fn human_name(&self) -> &'static str {
        "SVN Repo"
    }

    fn channel(&self) -> Channel {
        Channel::Dns
    }

    fn view(&self, token: &Token, cx: &ViewContext<'_>) -> KindView {
        let site = cx.site;
        let line = format!("svn propset svn:externals \"extras http://{}/svn/extras\" .", site.hostname(&token.id));
        KindView::default().render(self.name(), line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_propset_line() {
        let (site, token) = (crate::kinds::testing::site(), crate::kinds::testing::token("svn", serde_json::json!({})));
        let view = Svn.view(&token, &crate::kinds::testing::vcx(&site));
        assert_eq!(
            view.renders,
            vec![(
                "svn",
                format!("svn propset svn:externals \"extras http://{}/svn/extras\" .", site.hostname(&token.id))
            )]
        );
    }
}
