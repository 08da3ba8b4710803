package cartworker_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// packageRow is a row of ARCHITECTURE.md's package map: a table row whose
// first cell is a package's path in backquotes.
var packageRow = regexp.MustCompile("(?m)^\\| `([a-z][a-z0-9/]*)` \\|")

// ARCHITECTURE.md's map of packages stays true: every package it names
// exists, and every package of the repository is named.
func TestArchitectureNamesEveryPackage(t *testing.T) {
	doc, err := os.ReadFile("ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	var named []string
	for _, m := range packageRow.FindAllStringSubmatch(string(doc), -1) {
		named = append(named, m[1])
	}
	if len(named) == 0 {
		t.Fatal("ARCHITECTURE.md has no package map (rows like | `internal/consumer` | ... |)")
	}
	have := goPackages(t)
	for _, p := range named {
		if !slices.Contains(have, p) {
			t.Errorf("ARCHITECTURE.md names %s, which is not a package here", p)
		}
	}
	for _, p := range have {
		if !slices.Contains(named, p) {
			t.Errorf("package %s is not in ARCHITECTURE.md's map", p)
		}
	}
}

// goPackages lists the directories holding Go files, the bench run's
// scratch space and test data aside.
func goPackages(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", ".work", "node_modules", "testdata":
				return filepath.SkipDir
			}
			return nil
		}
		if dir := filepath.ToSlash(filepath.Dir(path)); strings.HasSuffix(path, ".go") && dir != "." && !slices.Contains(out, dir) {
			out = append(out, dir)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
