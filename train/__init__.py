"""Fine-tuning and evaluation. Importing this package stays cheap: Ray and torch load on use."""
