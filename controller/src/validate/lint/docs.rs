//! The rule pages of `docs/rules/`, built into the binary so `switchback rules SB103` explains a
//! finding on a machine with no checkout and no network.

macro_rules! pages {
    ($($id:literal),* $(,)?) => {
        /// The Markdown page of a rule, or `None` for an unknown id.
        pub fn page(id: &str) -> Option<&'static str> {
            match id {
                $($id => Some(include_str!(concat!("../../../../docs/rules/", $id, ".md"))),)*
                _ => None,
            }
        }
    };
}

pages!(
    "SB001", "SB002", "SB003", "SB010", "SB101", "SB102", "SB103", "SB104", "SB105", "SB106",
    "SB107", "SB108", "SB109", "SB110", "SB111", "SB112", "SB113", "SB114", "SB115", "SB116",
    "SB120", "SB121", "SB122", "SB123", "SB900", "SB901",
);

#[cfg(test)]
mod tests {
    use super::super::rules::RULES;
    use super::*;

    #[test]
    fn every_rule_has_a_page_that_starts_with_its_id() {
        for rule in RULES {
            let page = page(rule.id).unwrap_or_else(|| panic!("{} has no page", rule.id));
            assert!(
                page.starts_with(&format!("# {} {}", rule.id, rule.name)),
                "docs/rules/{}.md should start with `# {} {}`",
                rule.id,
                rule.id,
                rule.name
            );
        }
    }

    #[test]
    fn every_page_is_a_rule_and_listed_in_the_index() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/rules");
        let index = std::fs::read_to_string(format!("{dir}/README.md")).expect("index");
        for entry in std::fs::read_dir(dir).expect("docs/rules") {
            let name = entry.expect("entry").file_name();
            let name = name.to_string_lossy();
            let Some(id) = name.strip_suffix(".md") else {
                continue;
            };
            if id == "README" {
                continue;
            }
            assert!(RULES.iter().any(|r| r.id == id), "{name} is not a rule");
            assert!(
                index.contains(&format!("({id}.md)")),
                "{id} missing from the index"
            );
        }
    }
}
