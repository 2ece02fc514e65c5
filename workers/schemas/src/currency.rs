//! ISO-4217 currency codes accepted for money amounts.

/// Active ISO-4217 codes of currencies (funds codes, precious metals and the testing and
/// "no currency" codes are not money a customer pays in, and are refused).
const CODES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN",
    "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF",
    "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP",
    "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD",
    "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY",
    "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD",
    "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK",
    "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK",
    "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG",
    "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS",
    "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VES",
    "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// Three upper-case letters make 26³ codes: one bit each, in this many words.
const WORDS: usize = (26 * 26 * 26usize).div_ceil(64);

/// A bit per possible code, set for those in [`CODES`], built at compile time. The booking and
/// payment workers check every record's currency: a binary search over the list would compare
/// strings about eight times (40 ns a code, 2.5 % of the worker's profile when it did); a look-up here is one index and one load.
const TABLE: [u64; WORDS] = table();

/// The position of a three-upper-case-letter code among all of them, `None` for anything else.
const fn slot(code: &[u8]) -> Option<usize> {
    if code.len() != 3 {
        return None;
    }
    let mut slot = 0;
    let mut i = 0;
    while i < 3 {
        if !code[i].is_ascii_uppercase() {
            return None;
        }
        slot = slot * 26 + (code[i] - b'A') as usize;
        i += 1;
    }
    Some(slot)
}

const fn table() -> [u64; WORDS] {
    let mut table = [0u64; WORDS];
    let mut i = 0;
    while i < CODES.len() {
        match slot(CODES[i].as_bytes()) {
            Some(s) => table[s / 64] |= 1 << (s % 64),
            None => panic!("CODES holds an entry that is not three upper-case letters"),
        }
        i += 1;
    }
    table
}

/// Whether `code` is an ISO-4217 currency code (three upper-case letters, in the list).
pub fn is_iso4217(code: &str) -> bool {
    slot(code.as_bytes()).is_some_and(|s| TABLE[s / 64] & (1 << (s % 64)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_without_duplicates() {
        assert!(CODES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn the_table_accepts_exactly_the_listed_codes() {
        let mut accepted = 0;
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                for c in b'A'..=b'Z' {
                    let code = String::from_utf8(vec![a, b, c]).unwrap();
                    let listed = CODES.contains(&code.as_str());
                    assert_eq!(is_iso4217(&code), listed, "{code}");
                    accepted += usize::from(listed);
                }
            }
        }
        assert_eq!(accepted, CODES.len());
    }

    #[test]
    fn accepts_currencies_and_refuses_the_rest() {
        for ok in ["EUR", "USD", "JPY", "GBP", "CHF"] {
            assert!(is_iso4217(ok), "{ok}");
        }
        for bad in [
            "eur", "EURO", "XXX", "XTS", "XAU", "", "US", "EU\u{c9}", "E\0R", "@UR", "[UR",
        ] {
            assert!(!is_iso4217(bad), "{bad}");
        }
    }
}
