package cartcache

// containsID reports whether ids lists id.
func containsID(ids []string, id string) bool {
	// Newest last: a redelivery is most likely a recent command.
	for i := len(ids) - 1; i >= 0; i-- {
		if ids[i] == id {
			return true
		}
	}
	return false
}

// trimHistory keeps the newest keep of ids, and the codes of the refused
// ones it keeps: both stay bounded. It returns a nil map when no code is
// left.
func trimHistory(ids []string, rejected map[string]string, keep int) ([]string, map[string]string) {
	if over := len(ids) - keep; over > 0 {
		if len(rejected) > 0 {
			for _, id := range ids[:over] {
				delete(rejected, id)
			}
		}
		ids = ids[over:]
	}
	if len(rejected) > len(ids) {
		// Codes of ids the list does not hold, which only a document
		// written elsewhere can have: drop them, or nothing would.
		for id := range rejected {
			if !containsID(ids, id) {
				delete(rejected, id)
			}
		}
	}
	if len(rejected) == 0 {
		return ids, nil
	}
	return ids, rejected
}

// mergeIDs returns a followed by the ids of b it lacks.
func mergeIDs(a, b []string) []string {
	if len(b) == 0 {
		return a
	}
	out := append([]string(nil), a...)
	for _, id := range b {
		if !containsID(out, id) {
			out = append(out, id)
		}
	}
	return out
}
