package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
)

// Bounds on a roll, so one message cannot ask for a million dice.
const (
	maxSpecs = 10
	maxDice  = 100
	maxSides = 1000
	maxMod   = 1000
)

// spec is one dice expression: Count dice with Sides sides each, plus Mod.
type spec struct {
	Count, Sides, Mod int
}

func (s spec) String() string {
	out := fmt.Sprintf("%dd%d", s.Count, s.Sides)
	if s.Mod != 0 {
		out += fmt.Sprintf("%+d", s.Mod)
	}
	return out
}

// rollRequest is a parsed /roll: the dice and an optional seed.
type rollRequest struct {
	specs []spec
	seed  *int64
}

var specRE = regexp.MustCompile(`^(\d*)[dD](\d+)([+-]\d+)?$`)

// usage is what a malformed /roll gets told.
const usage = "want dice like 2d6, d20 or 3d6+2, optionally --seed N"

// parseRoll parses the text after "/roll": dice specs and --seed N (or
// --seed=N). No spec means one six-sided die.
func parseRoll(rest string) (rollRequest, error) {
	var req rollRequest
	words := strings.Fields(rest)
	for i := 0; i < len(words); i++ {
		w := words[i]
		if flag, ok := strings.CutPrefix(w, "--"); ok {
			name, value, hasValue := strings.Cut(flag, "=")
			if name != "seed" {
				return req, fmt.Errorf("unknown option %q: %s", w, usage)
			}
			if !hasValue {
				if i+1 >= len(words) {
					return req, errors.New("--seed needs a number, e.g. --seed 42")
				}
				i++
				value = words[i]
			}
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil {
				return req, fmt.Errorf("--seed needs a whole number, not %q", value)
			}
			req.seed = &n
			continue
		}
		s, err := parseSpec(w)
		if err != nil {
			return req, err
		}
		if len(req.specs) == maxSpecs {
			return req, fmt.Errorf("at most %d dice expressions at once", maxSpecs)
		}
		req.specs = append(req.specs, s)
	}
	if len(req.specs) == 0 {
		req.specs = []spec{{Count: 1, Sides: 6}}
	}
	return req, nil
}

// parseSpec parses NdM, dM, NdM+K or NdM-K.
func parseSpec(w string) (spec, error) {
	m := specRE.FindStringSubmatch(w)
	if m == nil {
		return spec{}, fmt.Errorf("can't roll %q: %s", w, usage)
	}
	s := spec{Count: 1}
	var err error
	if m[1] != "" {
		if s.Count, err = strconv.Atoi(m[1]); err != nil || s.Count > maxDice {
			return spec{}, fmt.Errorf("can't roll %q: at most %d dice at once", w, maxDice)
		}
		if s.Count < 1 {
			return spec{}, fmt.Errorf("can't roll %q: roll at least one die", w)
		}
	}
	if s.Sides, err = strconv.Atoi(m[2]); err != nil || s.Sides > maxSides {
		return spec{}, fmt.Errorf("can't roll %q: a die has at most %d sides", w, maxSides)
	}
	if s.Sides < 2 {
		return spec{}, fmt.Errorf("can't roll %q: a die needs at least 2 sides", w)
	}
	if m[3] != "" {
		if s.Mod, err = strconv.Atoi(m[3]); err != nil || s.Mod > maxMod || s.Mod < -maxMod {
			return spec{}, fmt.Errorf("can't roll %q: the modifier must be within ±%d", w, maxMod)
		}
	}
	return s, nil
}

// roll rolls the dice and describes the result, one line per expression:
//
//	🎲 2d6 → 3 + 5 = 8
//
// With a seed the same request always rolls the same numbers.
func (r rollRequest) roll() string {
	var rng *rand.Rand
	if r.seed != nil {
		// PCG is a specified algorithm: a seed rolls the same everywhere.
		rng = rand.New(rand.NewPCG(uint64(*r.seed), 0x9e3779b97f4a7c15))
	} else {
		rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	var b strings.Builder
	total := 0
	for i, s := range r.specs {
		if i > 0 {
			b.WriteByte('\n')
		}
		sum := s.Mod
		faces := make([]string, s.Count)
		for j := range faces {
			v := 1 + rng.IntN(s.Sides)
			sum += v
			faces[j] = strconv.Itoa(v)
		}
		total += sum
		fmt.Fprintf(&b, "🎲 %s → %s", s, strings.Join(faces, " + "))
		switch {
		case s.Mod != 0:
			fmt.Fprintf(&b, " (%+d) = %d", s.Mod, sum)
		case s.Count > 1:
			fmt.Fprintf(&b, " = %d", sum)
		}
	}
	if len(r.specs) > 1 {
		fmt.Fprintf(&b, "\ntotal = %d", total)
	}
	if r.seed != nil {
		fmt.Fprintf(&b, "\n(seed %d)", *r.seed)
	}
	return b.String()
}
