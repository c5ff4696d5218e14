-- An installment's receipt carries its plan's manage link: the relay finds the plan of a receipt's donation through
-- this index (a lookup per claimed receipt, never a scan of the installments).
CREATE INDEX recurring_installments_donation ON surge.recurring_installments (donation_id)
    WHERE donation_id IS NOT NULL;
