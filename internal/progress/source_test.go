package progress

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Units are refused at the source: no code outside tests reports progress
// in a unit spelled as a string literal (SetTotal(n, "B") once made the
// store refuse every later write of an operation); it names one of the
// constants. A literal or conversion naming a unit outside the set fails
// here, whichever package it is in.
func TestNoUnitLiteralsInSource(t *testing.T) {
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	var checked int
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); name == "testdata" || name == "build" || strings.HasPrefix(name, ".") && path != root {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			if sel, ok := call.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "SetTotal" && len(call.Args) == 2 {
				if lit, ok := call.Args[1].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					t.Errorf("%s: SetTotal with the unit %s spelled out: use a progress constant", fset.Position(lit.Pos()), lit.Value)
				}
			}
			if isUnitType(call.Fun) && len(call.Args) == 1 {
				if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if s, err := strconv.Unquote(lit.Value); err == nil && !Unit(s).Valid() {
						t.Errorf("%s: unit %s is not one of the set", fset.Position(lit.Pos()), lit.Value)
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 100 {
		t.Fatalf("checked only %d files under %s: the walk went wrong", checked, root)
	}
}

// isUnitType reports whether e names a type called Unit (Unit, progress.Unit,
// store.Unit, opstate.Unit).
func isUnitType(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name == "Unit"
	case *ast.SelectorExpr:
		return e.Sel.Name == "Unit"
	}
	return false
}
