package playground

import (
	"bytes"
	"html/template"
	"strings"
	"testing"
)

// Cards render from their JSON: header, markdown (mentions, bold, links;
// never raw HTML), fields, buttons, selects, notes, columns; an element the
// playground does not know is a labelled box, never dropped.
func TestRenderCard(t *testing.T) {
	tests := []struct {
		name      string
		card      string
		want, not []string
	}{
		{"header and markdown", `{"header":{"template":"green","title":{"tag":"plain_text","content":"Hi"}},
			"elements":[{"tag":"div","text":{"tag":"lark_md","content":"**bold** by <at id=ou_1></at> [doc](https://example.com) <script>x</script>"}}]}`,
			[]string{`card-header">Hi<`, "tpl-green", "<strong>bold</strong>", `<span class="at">@ou_1</span>`,
				`<a href="https://example.com"`, "&lt;script&gt;x&lt;/script&gt;"}, []string{"<script>"}},
		{"fields", `{"elements":[{"tag":"div","fields":[{"is_short":true,"text":{"tag":"lark_md","content":"**A**"}},{"is_short":true,"text":{"tag":"plain_text","content":"B"}}]}]}`,
			[]string{`class="field"><strong>A</strong>`, `class="field">B<`}, nil},
		{"buttons and select", `{"elements":[{"tag":"action","actions":[
			{"tag":"button","type":"primary","text":{"tag":"plain_text","content":"Go"},"value":{"k":"v"}},
			{"tag":"button","text":{"tag":"plain_text","content":"Docs"},"url":"https://example.com/d"},
			{"tag":"select_static","placeholder":{"tag":"plain_text","content":"Pick"},"options":[{"text":{"tag":"plain_text","content":"One"},"value":"1"}]},
			{"tag":"date_picker"}]}]}`,
			[]string{`btn primary">Go</button>`, `value="{&#34;k&#34;:&#34;v&#34;}"`, `href="https://example.com/d"`, `<option value="1">One</option>`,
				"Pick", "Unsupported element: date_picker"}, nil},
		{"note, hr, image, columns, unknown", `{"elements":[{"tag":"note","elements":[{"tag":"plain_text","content":"small print"},{"tag":"img","alt":{"tag":"plain_text","content":"logo"}}]},
			{"tag":"hr"},{"tag":"img","img_key":"img_v2_x","alt":{"tag":"plain_text","content":"a chart"}},
			{"tag":"column_set","columns":[{"elements":[{"tag":"markdown","content":"left"}]},{"elements":[{"tag":"markdown","content":"right"}]}]},
			{"tag":"chart"}]}`,
			[]string{`class="el note">small print <span class="img">[image: logo]</span>`, "<hr>", "Image: image img_v2_x a chart",
				`class="column"`, "left", "right", "Unsupported element: chart"}, nil},
		{"schema 2.0 body", `{"schema":"2.0","header":{"title":{"tag":"plain_text","content":"T"}},"body":{"elements":[{"tag":"markdown","content":"hi"},{"tag":"button","text":{"tag":"plain_text","content":"B"}}]}}`,
			[]string{">hi<", ">B</button>"}, nil},
		{"unreadable", `{"elements":`, []string{"could not be read"}, nil},
	}
	p, err := New(Config{EventURL: "http://127.0.0.1:1/e", AppID: "cli_x"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := p.tmpl.ExecuteTemplate(&b, "card", map[string]any{"Chat": "oc", "MessageID": "om", "Card": renderCard(tt.card)}); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("rendered card lacks %q:\n%s", w, out)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(out, n) {
					t.Errorf("rendered card contains %q:\n%s", n, out)
				}
			}
		})
	}
}

// A card callback's answer: its toast, and its card raw or wrapped.
func TestCallbackAnswer(t *testing.T) {
	tests := []struct {
		name, body, toast, card string
	}{
		{"toast only", `{"toast":{"type":"success","content":"Done."}}`, "Done.", ""},
		{"raw card", `{"card":{"type":"raw","data":{"elements":[]}}}`, "", `{"elements":[]}`},
		{"bare card", `{"card":{"elements":[]}}`, "", `{"elements":[]}`},
		{"empty", `{}`, "", ""},
		{"not JSON", `oops`, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			toast, card := callbackAnswer([]byte(tt.body))
			if toast.Content != tt.toast || card != tt.card {
				t.Fatalf("got toast %q card %q, want %q %q", toast.Content, card, tt.toast, tt.card)
			}
		})
	}
}

// Card JSON comes from plugins: any bytes render without panicking, and
// markdown never lets markup through.
func FuzzRenderCard(f *testing.F) {
	f.Add(`{"header":{"title":{"tag":"plain_text","content":"x"}},"elements":[{"tag":"div","text":{"tag":"lark_md","content":"<at id=a></at>**b**"}}]}`)
	f.Add(`{"elements":[{"tag":"action","actions":[{"tag":"button","value":1}]}]}`)
	f.Add(`{"body":{"elements":[{"tag":"column_set","columns":[{"elements":[{"tag":"note"}]}]}]}}`)
	f.Fuzz(func(t *testing.T, card string) {
		renderCard(card)
		md := markdown(card)
		if strings.Contains(string(md), "<script") || strings.Contains(string(md), "<img") {
			t.Fatalf("markdown let markup through: %s", md)
		}
		_ = template.HTML(md)
	})
}
