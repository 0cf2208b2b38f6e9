//! Links (`/links`): each link's groups with platform, alias and direction (receive-only
//! marked), and each destination's effective pacing, pictures, word rules, moderation and
//! filters in the words `qunbridge check` prints ([`crate::describe`]). Groups go by their
//! alias here; their ids are on the group-health detail page only.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use qunbridge_connectors::Platform;

use super::html::{self, esc};
use super::i18n::{Lang, PageLang};
use super::view::ConsoleView;
use crate::admin::Health;

/// A line with every `account:group` of a linked group (a rule of one group names it so)
/// replaced by the group's alias: no chat id on this page.
fn without_ids(view: &ConsoleView, line: &str) -> String {
    let mut line = line.to_owned();
    for group in view.aliases.all() {
        let id = format!("{}:{}", group.account, group.group);
        if line.contains(&id) {
            line = line.replace(&id, &group.alias);
        }
    }
    line
}

/// `GET /links`.
pub async fn page(
    State(health): State<Arc<Health>>,
    PageLang { lang, chosen }: PageLang,
) -> Response {
    let view = health.console_view();
    let body = view
        .as_deref()
        .map_or_else(String::new, |view| render(lang, view));
    let sign_out = view.is_some_and(|view| view.access.required());
    html::respond_in(
        lang,
        chosen,
        html::layout(lang, Some("/links"), lang.t("Links"), sign_out, &body),
    )
}

/// The page's body.
pub fn render(lang: Lang, view: &ConsoleView) -> String {
    let t = |text| esc(lang.t(text));
    if view.links.is_empty() {
        return format!("<p class=\"empty\">{}</p>", t("No links are configured."));
    }
    let mut out = String::from("<div data-live=\"page\">");
    for link in &view.links {
        out.push_str(&format!(
            "<section class=\"card link\" data-link=\"{name}\"><h2>{link_label} {name}</h2>\
<p>{template}: <code>{format}</code></p><table><thead><tr><th>{alias}</th><th>{platform}</th><th>{account}</th><th>{direction}</th></tr></thead><tbody>",
            name = esc(&link.name),
            link_label = t("Link"),
            template = t("Sender template"),
            format = esc(&link.format),
            alias = t("Alias"),
            platform = t("Platform"),
            account = t("Account"),
            direction = t("Direction"),
        ));
        for member in &link.members {
            let direction = if member.receive_only {
                format!(
                    "<span class=\"badge receive-only\">{}</span>",
                    t("receive only")
                )
            } else {
                t("sends and receives")
            };
            out.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{direction}</td></tr>",
                esc(&member.alias),
                member.platform.map_or("?", Platform::as_str),
                esc(&member.account),
            ));
        }
        out.push_str(&format!("</tbody></table><h3>{}</h3>", t("Destinations")));
        for destination in view.destinations.iter().filter(|d| d.link == link.name) {
            let alias = view.alias_of(&destination.target.account, &destination.target.group);
            out.push_str(&format!(
                "<div class=\"destination\"><h4>{} <small>({}, {})</small></h4><pre>",
                esc(&alias),
                esc(&destination.target.account),
                destination.platform.as_str()
            ));
            for line in &destination.lines {
                out.push_str(&esc(&without_ids(view, line)));
                out.push('\n');
            }
            out.push_str("</pre></div>");
        }
        out.push_str("</section>");
    }
    out.push_str("</div>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::access::Access;
    use crate::console::view::{LinkView, MemberView};
    use crate::stats::aliases::Aliases;

    #[test]
    fn members_show_alias_platform_and_a_receive_only_mark() {
        let view = ConsoleView {
            access: Access::open(),
            aliases: Aliases::default(),
            links: vec![LinkView {
                name: "fans".to_owned(),
                format: "[{platform}] {name}: ".to_owned(),
                members: vec![
                    MemberView {
                        alias: "fans-qq".to_owned(),
                        account: "qq".to_owned(),
                        platform: Some(Platform::Qq),
                        receive_only: false,
                    },
                    MemberView {
                        alias: "ops-hook".to_owned(),
                        account: "ding-hook".to_owned(),
                        platform: Some(Platform::Dingtalk),
                        receive_only: true,
                    },
                ],
            }],
            destinations: Vec::new(),
        };
        let page = render(Lang::En, &view);
        assert!(
            page.contains("<td>fans-qq</td><td>qq</td><td>qq</td><td>sends and receives</td>"),
            "{page}"
        );
        assert!(page.contains("<td>ops-hook</td><td>dingtalk</td><td>ding-hook</td><td><span class=\"badge receive-only\">receive only</span></td>"), "{page}");
        assert!(render(Lang::Zh, &view).contains("仅接收"));
    }
}
