package admin

import "sort"

func sortViews(v []*pluginView) { sort.Slice(v, func(i, j int) bool { return v[i].Name < v[j].Name }) }
