import pytest

from monolith.render import render_html


def test_contract_example_has_no_paragraph():
    assert render_html("hello *world*!") == "hello <em>world</em>!"


@pytest.mark.parametrize(
    ("source", "tag"),
    [
        ("**bold**", "strong"),
        ("_it_", "em"),
        ("`x = 1`", "code"),
        ("<b>b</b>", "b"),
        ("<i>i</i>", "i"),
        ('<abbr title="HyperText">HTML</abbr>', "abbr"),
        ('<acronym title="NATO">NATO</acronym>', "acronym"),
    ],
)
def test_allowed_tags_are_kept(source, tag):
    assert f"<{tag}" in render_html(source)
    assert f"</{tag}>" in render_html(source)


def test_abbr_keeps_title():
    assert render_html('<abbr title="HyperText">HTML</abbr>') == '<abbr title="HyperText">HTML</abbr>'


@pytest.mark.parametrize(
    ("source", "text"),
    [
        ("# Title", "Title"),
        ("* one\n* two", "one"),
        ("> quoted", "quoted"),
        ("<div>block</div>", "block"),
        ("<u>under</u>", "under"),
        ("<table><tr><td>cell</td></tr></table>", "cell"),
    ],
)
def test_other_tags_are_stripped_but_text_kept(source, text):
    html = render_html(source)
    assert text in html
    for tag in ("<h1", "<ul", "<li", "<blockquote", "<div", "<u>", "<table", "<td", "<p>"):
        assert tag not in html


def test_bare_link_is_linkified_with_nofollow():
    html = render_html("see http://example.com/page now")
    assert html == (
        'see <a href="http://example.com/page" rel="nofollow">http://example.com/page</a> now'
    )


def test_markdown_link_gets_nofollow_and_keeps_title():
    html = render_html('[site](https://example.org "The site")')
    assert 'href="https://example.org"' in html
    assert 'title="The site"' in html
    assert 'rel="nofollow"' in html


def test_script_tag_never_survives_as_markup():
    html = render_html("<script>alert('x')</script>after")
    assert "<script" not in html.lower()
    assert "after" in html


def test_script_smuggled_through_nesting_is_escaped():
    html = render_html("<<script>script>alert(1)<</script>/script>")
    assert "<script" not in html.lower()
    assert "&lt;script&gt;" in html


def test_style_tag_is_removed():
    assert "<style" not in render_html("<style>body{display:none}</style>hi").lower()


@pytest.mark.parametrize(
    "source",
    [
        "[click](javascript:alert(1))",
        '<a href="javascript:alert(1)">click</a>',
        '<a href="JaVaScRiPt:alert(1)">click</a>',
        '<a href="data:text/html,<script>alert(1)</script>">click</a>',
        '<a href="vbscript:msgbox(1)">click</a>',
    ],
)
def test_dangerous_link_schemes_lose_their_href(source):
    html = render_html(source).lower()
    # the markdown form stays inert text; the HTML form loses its href
    assert "href" not in html
    assert "click" in html


@pytest.mark.parametrize(
    "source",
    [
        '<a href="http://a.example" onclick="steal()">x</a>',
        '<b onmouseover="steal()">x</b>',
        '<img src="x" onerror="steal()">',
        '<code style="background:url(x)" class="c">x</code>',
    ],
)
def test_event_and_style_attributes_are_removed(source):
    html = render_html(source)
    assert "steal" not in html
    assert "onerror" not in html
    assert "style=" not in html
    assert "class=" not in html
    assert "<img" not in html


def test_mailto_link_is_kept():
    assert 'href="mailto:a@example.com"' in render_html("[mail](mailto:a@example.com)")


def test_unclosed_tag_is_balanced():
    assert render_html("<b>unclosed") == "<b>unclosed</b>"


def test_empty_source_gives_empty_html():
    assert render_html("") == ""


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:5000/page", "http://localhost:8000/x?y=1", "https://[::1]:8443/"],
)
def test_explicit_local_urls_are_linkified(url):
    html = render_html(f"go to {url} now")
    assert html == f'go to <a href="{url.replace("&", "&amp;")}" rel="nofollow">{url}</a> now'


def test_trailing_period_is_not_part_of_a_local_link():
    assert render_html("see http://localhost:5000/x.").endswith("</a>.")


@pytest.mark.parametrize("text", ["127.0.0.1", "version 1.2.3.4", "localhost:5000"])
def test_addresses_without_a_scheme_stay_text(text):
    assert "<a" not in render_html(text)
