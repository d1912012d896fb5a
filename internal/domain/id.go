package domain

import "strings"

// ValidID reports whether s is a valid device or module ID: 1 to 128 ASCII letters,
// digits and - . % _ * ? ! ( ) , : = @ $ ' (IoT Hub's rule, which every kind shares so a
// device keeps its identity whatever it connects to). IDs are case-sensitive.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' {
			continue
		}
		if !strings.ContainsRune("-.%_*?!(),:=@$'", rune(c)) {
			return false
		}
	}
	return true
}

// IDRule is ValidID's rule in words, for error messages.
const IDRule = "1 to 128 letters, digits or - . % _ * ? ! ( ) , : = @ $ '"
