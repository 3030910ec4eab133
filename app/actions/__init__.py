"""Action pages: petitions, letters to officials, call-ins, events and sign-up pages."""
