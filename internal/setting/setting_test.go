package setting_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cartworker/cartworker/internal/setting"
)

func TestEachFindsEveryFieldError(t *testing.T) {
	other := errors.New("not about a field")
	err := errors.Join(
		setting.Errorf("A", "%d: want 1", 0),
		fmt.Errorf("wrapped: %w", setting.Errorf("B", "bad")),
		errors.Join(setting.Errorf("C", "worse"), other),
	)
	var got []string
	rest := setting.Each(err, func(e *setting.Error) { got = append(got, e.Error()) })
	require.Equal(t, []string{"A: 0: want 1", "B: bad", "C: worse"}, got)
	require.Equal(t, []error{other}, rest)
	require.Nil(t, setting.Each(nil, func(*setting.Error) { t.Fatal("called for nil") }))
}
