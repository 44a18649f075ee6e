package playground

import (
	"encoding/json"
	"html"
	"html/template"
	"regexp"
	"strings"
)

// cardView is a Lark card (message card JSON, schema 1.0 "elements" or
// 2.0 "body.elements") ready to render.
type cardView struct {
	Title, Template string
	Elements        []element
	// Error is set when the card JSON could not be read.
	Error string
	JSON  string
}

// element is one card element. Kind selects its rendering; an element the
// playground does not render is Kind "unsupported" with its Tag, shown as a
// labelled box rather than dropped.
type element struct {
	Kind    string // text, fields, hr, actions, note, image, columns, unsupported
	Tag     string
	HTML    template.HTML
	Fields  []template.HTML
	Actions []control
	Columns [][]element
}

// control is an interactive element: a button or a select.
type control struct {
	Kind    string // button, select, unsupported
	Tag     string
	Label   string
	Style   string
	Value   string // JSON
	Options []option
	URL     string
}

type option struct{ Label, Value string }

// renderCard reads card JSON into a view; unreadable JSON becomes a view
// saying so, with the JSON.
func renderCard(cardJSON string) *cardView {
	var c struct {
		Header struct {
			Template string          `json:"template"`
			Title    json.RawMessage `json:"title"`
		} `json:"header"`
		Elements []json.RawMessage `json:"elements"`
		Body     struct {
			Elements []json.RawMessage `json:"elements"`
		} `json:"body"`
	}
	v := &cardView{JSON: cardJSON}
	if err := json.Unmarshal([]byte(cardJSON), &c); err != nil {
		v.Error = "This card's JSON could not be read: " + err.Error()
		return v
	}
	v.Title, v.Template = textOf(c.Header.Title), c.Header.Template
	els := c.Elements
	if len(els) == 0 {
		els = c.Body.Elements
	}
	v.Elements = elements(els)
	return v
}

func elements(raws []json.RawMessage) []element {
	out := make([]element, 0, len(raws))
	for _, raw := range raws {
		out = append(out, elementOf(raw))
	}
	return out
}

// textObj is a Lark text object: {"tag": "plain_text"|"lark_md", "content": ...}.
type textObj struct {
	Tag     string `json:"tag"`
	Content string `json:"content"`
}

func textOf(raw json.RawMessage) string {
	var t textObj
	if json.Unmarshal(raw, &t) == nil {
		return t.Content
	}
	var s string
	_ = json.Unmarshal(raw, &s)
	return s
}

func textHTML(raw json.RawMessage) template.HTML {
	var t textObj
	if json.Unmarshal(raw, &t) != nil {
		return ""
	}
	if t.Tag == "lark_md" {
		return markdown(t.Content)
	}
	return plain(t.Content)
}

func plain(s string) template.HTML {
	return template.HTML(strings.ReplaceAll(html.EscapeString(s), "\n", "<br>"))
}

var (
	atRE     = regexp.MustCompile(`<at\s+(?:id|user_id|open_id)=["']?([^"'>\s]+)["']?\s*>([^<]*)</at>`)
	boldRE   = regexp.MustCompile(`\*\*(.+?)\*\*`)
	italicRE = regexp.MustCompile(`(^|[^*])\*([^*\n]+)\*`)
	strikeRE = regexp.MustCompile(`~~(.+?)~~`)
	linkRE   = regexp.MustCompile(`\[([^\]]+)\]\((https?://[^)\s]+)\)`)
	codeRE   = regexp.MustCompile("`([^`]+)`")
)

// markdown renders Lark's card markdown subset: mentions, bold, italics,
// strikethrough, inline code, links and line breaks. The text is escaped
// first, so nothing in it becomes markup but these.
func markdown(s string) template.HTML {
	s = atRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := atRE.FindStringSubmatch(m)
		name := sub[2]
		if name == "" {
			name = sub[1]
		}
		if sub[1] == "all" {
			name = "all"
		}
		return "\x00at" + name + "\x00"
	})
	e := html.EscapeString(s)
	e = regexp.MustCompile("\x00at([^\x00]*)\x00").ReplaceAllString(e, `<span class="at">@$1</span>`)
	e = codeRE.ReplaceAllString(e, "<code>$1</code>")
	e = boldRE.ReplaceAllString(e, "<strong>$1</strong>")
	e = italicRE.ReplaceAllString(e, "$1<em>$2</em>")
	e = strikeRE.ReplaceAllString(e, "<del>$1</del>")
	e = linkRE.ReplaceAllString(e, `<a href="$2" rel="noopener noreferrer" target="_blank">$1</a>`)
	return template.HTML(strings.ReplaceAll(e, "\n", "<br>"))
}

func elementOf(raw json.RawMessage) element {
	var base struct {
		Tag      string            `json:"tag"`
		Text     json.RawMessage   `json:"text"`
		Content  string            `json:"content"`
		Fields   []json.RawMessage `json:"fields"`
		Actions  []json.RawMessage `json:"actions"`
		Elements []json.RawMessage `json:"elements"`
		Columns  []struct {
			Elements []json.RawMessage `json:"elements"`
		} `json:"columns"`
		Alt    json.RawMessage `json:"alt"`
		ImgKey string          `json:"img_key"`
	}
	if json.Unmarshal(raw, &base) != nil {
		return element{Kind: "unsupported", Tag: "(unreadable)"}
	}
	switch base.Tag {
	case "div":
		e := element{Kind: "text", Tag: "div", HTML: textHTML(base.Text)}
		for _, f := range base.Fields {
			var fo struct {
				Text json.RawMessage `json:"text"`
			}
			_ = json.Unmarshal(f, &fo)
			e.Fields = append(e.Fields, textHTML(fo.Text))
		}
		if len(e.Fields) > 0 {
			e.Kind = "fields"
		}
		return e
	case "markdown", "lark_md":
		return element{Kind: "text", Tag: base.Tag, HTML: markdown(base.Content)}
	case "plain_text":
		return element{Kind: "text", Tag: base.Tag, HTML: plain(base.Content)}
	case "hr":
		return element{Kind: "hr", Tag: "hr"}
	case "action":
		e := element{Kind: "actions", Tag: "action"}
		for _, a := range base.Actions {
			e.Actions = append(e.Actions, controlOf(a))
		}
		return e
	case "button", "select_static":
		return element{Kind: "actions", Tag: base.Tag, Actions: []control{controlOf(raw)}}
	case "note":
		e := element{Kind: "note", Tag: "note"}
		var parts []string
		for _, n := range base.Elements {
			var t struct {
				Tag     string          `json:"tag"`
				Content string          `json:"content"`
				Alt     json.RawMessage `json:"alt"`
			}
			_ = json.Unmarshal(n, &t)
			switch t.Tag {
			case "lark_md":
				parts = append(parts, string(markdown(t.Content)))
			case "plain_text":
				parts = append(parts, string(plain(t.Content)))
			case "img":
				parts = append(parts, `<span class="img">[image: `+html.EscapeString(textOf(t.Alt))+`]</span>`)
			default:
				parts = append(parts, `<span class="unsupported">[`+html.EscapeString(t.Tag)+`]</span>`)
			}
		}
		e.HTML = template.HTML(strings.Join(parts, " "))
		return e
	case "img":
		return element{Kind: "image", Tag: "img", HTML: plain("image " + base.ImgKey + " " + textOf(base.Alt))}
	case "column_set":
		e := element{Kind: "columns", Tag: "column_set"}
		for _, col := range base.Columns {
			e.Columns = append(e.Columns, elements(col.Elements))
		}
		return e
	}
	return element{Kind: "unsupported", Tag: base.Tag}
}

func controlOf(raw json.RawMessage) control {
	var a struct {
		Tag         string          `json:"tag"`
		Text        json.RawMessage `json:"text"`
		Type        string          `json:"type"`
		Value       json.RawMessage `json:"value"`
		URL         string          `json:"url"`
		Placeholder json.RawMessage `json:"placeholder"`
		Options     []struct {
			Text  json.RawMessage `json:"text"`
			Value string          `json:"value"`
		} `json:"options"`
	}
	if json.Unmarshal(raw, &a) != nil {
		return control{Kind: "unsupported", Tag: "(unreadable)"}
	}
	value := string(a.Value)
	if value == "" || value == "null" {
		value = "{}"
	}
	switch a.Tag {
	case "button":
		return control{Kind: "button", Tag: a.Tag, Label: textOf(a.Text), Style: a.Type, Value: value, URL: a.URL}
	case "select_static":
		c := control{Kind: "select", Tag: a.Tag, Label: textOf(a.Placeholder), Value: value}
		for _, o := range a.Options {
			c.Options = append(c.Options, option{Label: textOf(o.Text), Value: o.Value})
		}
		return c
	}
	return control{Kind: "unsupported", Tag: a.Tag}
}
